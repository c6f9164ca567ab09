// Package gamma replays Gateway API's mesh (GAMMA) conformance tests
// through weft's translator and the traffic simulator. The tests are read
// from the sigs.k8s.io/gateway-api/conformance module's own Go source
// (tests/mesh/*.go) with go/ast, and its manifests, so a newer module
// version is replayed as it is; nothing is copied by hand.
package gamma

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ConformanceModule is the module whose tests are replayed.
const ConformanceModule = "sigs.k8s.io/gateway-api/conformance"

// ModuleDir downloads (or finds in the module cache) the conformance
// module at version and returns its directory, as `go mod download -json`
// reports it.
func ModuleDir(version string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", ConformanceModule+"@"+version)
	cmd.Dir = os.TempDir() // outside any module: no go.mod is read or changed
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %v: %s%s", ConformanceModule, version, err, stderr.String(), out.String())
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out.Bytes(), &info); err != nil {
		return "", err
	}
	if info.Error != "" {
		return "", fmt.Errorf("go mod download %s@%s: %s", ConformanceModule, version, info.Error)
	}
	return info.Dir, nil
}

// Test is one conformance test as its source declares it.
type Test struct {
	ShortName, Description string
	Features               []string
	// Manifests are paths relative to the module root.
	Manifests   []string
	Provisional bool
	Cases       []Case
	// Weights: the expected share of each backend (a weight test).
	Weights map[string]float64
	// Unread lists what the reader could not interpret, so that a newer
	// test that does something new is reported, not silently half-read.
	Unread []string
	File   string
}

// Client is the mesh pod a case's request is sent from.
type Client struct {
	// App is a label selector such as "app=echo,version=v1".
	App, Namespace string
}

// Case is one http.ExpectedResponse of a test.
type Case struct {
	Name   string
	Client Client
	// Request.
	Host, Method, Path, Protocol string
	Headers                      map[string]string
	// HostPod: Host is the address of this client's pod (the test calls
	// http.Ipv6SafeHost(<client>.Address)), followed by HostSuffix.
	HostPod    *Client
	HostSuffix string
	// Expected: any of StatusCodes (default 200), the responding pod's
	// name starts with Backend (when set) in Namespace (when set).
	StatusCodes []int
	Backend     string
	Namespace   string
	// What the echo server would report: headers the backend received
	// (and must not have), response headers (and absent ones).
	RequestHeaders        map[string]string
	AbsentRequestHeaders  []string
	ResponseHeaders       map[string]string
	AbsentResponseHeaders []string
	// Redirect: the response is a redirect whose Location has these
	// parts (empty ones default as the suite's
	// setRedirectRequestDefaults does).
	Redirect *Redirect
}

// Redirect is roundtripper.RedirectRequest.
type Redirect struct {
	Scheme, Host, Port, Path string
}

// ReadTests parses every tests/mesh/*.go file of the module at dir.
func ReadTests(dir string) ([]*Test, error) {
	consts, err := readConsts(filepath.Join(dir, "utils", "suite"), filepath.Join(dir, "utils", "echo"))
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(dir, "tests", "mesh", "*.go"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	// Every suite.ConformanceTest of the package, by variable name (a test
	// may reuse another's Test function: Test: Other.Test).
	type decl struct {
		lit  *ast.CompositeLit
		file string
	}
	lits := map[string]decl{}
	var order []string
	fset := token.NewFileSet()
	for _, f := range files {
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			return nil, err
		}
		for _, d := range file.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, v := range vs.Values {
					cl, ok := v.(*ast.CompositeLit)
					if !ok || typeName(cl.Type) != "suite.ConformanceTest" || i >= len(vs.Names) {
						continue
					}
					lits[vs.Names[i].Name] = decl{cl, filepath.Base(f)}
					order = append(order, vs.Names[i].Name)
				}
			}
		}
	}
	testFunc := func(name string) *ast.FuncLit {
		d, ok := lits[name]
		if !ok {
			return nil
		}
		for _, el := range d.lit.Elts {
			if kv, ok := el.(*ast.KeyValueExpr); ok && kv.Key.(*ast.Ident).Name == "Test" {
				fl, _ := kv.Value.(*ast.FuncLit)
				return fl
			}
		}
		return nil
	}
	var tests []*Test
	for _, name := range order {
		r := &reader{consts: consts, env: map[string]any{}, clients: map[string]Client{}, varClient: map[string]string{}, testFunc: testFunc}
		t := r.test(lits[name].lit)
		t.File = lits[name].file
		tests = append(tests, t)
	}
	return tests, nil
}

// readConsts collects the string constants of the packages (suite.X,
// echo.X), to resolve names such as suite.MeshNamespace.
func readConsts(dirs ...string) (map[string]string, error) {
	out := map[string]string{}
	fset := token.NewFileSet()
	for _, dir := range dirs {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			file, err := parser.ParseFile(fset, f, nil, 0)
			if err != nil {
				return nil, err
			}
			for _, d := range file.Decls {
				gd, ok := d.(*ast.GenDecl)
				if !ok || gd.Tok != token.CONST {
					continue
				}
				for _, spec := range gd.Specs {
					vs := spec.(*ast.ValueSpec)
					for i, n := range vs.Names {
						if i < len(vs.Values) {
							if bl, ok := vs.Values[i].(*ast.BasicLit); ok && bl.Kind == token.STRING {
								s, _ := strconv.Unquote(bl.Value)
								out[file.Name.Name+"."+n.Name] = s
							}
						}
					}
				}
			}
		}
	}
	return out, nil
}

type reader struct {
	consts map[string]string
	// env: local variables bound to values the reader understood.
	env map[string]any
	// clients: local variables holding a mesh client.
	clients map[string]Client
	// varClient: which client sends the cases held by a variable.
	varClient map[string]string
	unread    []string
	// testFunc finds the Test function of another test variable.
	testFunc func(name string) *ast.FuncLit
}

// podAddr stands for http.Ipv6SafeHost(<client>.Address).
type podAddr struct{ client, suffix string }

func typeName(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.SelectorExpr:
		if x, ok := t.X.(*ast.Ident); ok {
			return x.Name + "." + t.Sel.Name
		}
	case *ast.Ident:
		return t.Name
	case *ast.ArrayType:
		return "[]" + typeName(t.Elt)
	case *ast.MapType:
		return "map[" + typeName(t.Key) + "]" + typeName(t.Value)
	case *ast.StarExpr:
		return "*" + typeName(t.X)
	}
	return ""
}

func (r *reader) test(cl *ast.CompositeLit) *Test {
	t := &Test{}
	var body *ast.BlockStmt
	for _, el := range cl.Elts {
		kv, ok := el.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		key := kv.Key.(*ast.Ident).Name
		switch key {
		case "ShortName":
			t.ShortName, _ = r.eval(kv.Value).(string)
		case "Description":
			t.Description, _ = r.eval(kv.Value).(string)
		case "Provisional":
			t.Provisional = r.eval(kv.Value) == true
		case "Features":
			for _, f := range kv.Value.(*ast.CompositeLit).Elts {
				t.Features = append(t.Features, strings.TrimPrefix(typeName(f), "features."))
			}
		case "Manifests":
			for _, m := range kv.Value.(*ast.CompositeLit).Elts {
				if s, ok := r.eval(m).(string); ok {
					t.Manifests = append(t.Manifests, s)
				}
			}
		case "Test":
			switch v := kv.Value.(type) {
			case *ast.FuncLit:
				body = v.Body
			case *ast.SelectorExpr: // Other.Test
				if x, ok := v.X.(*ast.Ident); ok && v.Sel.Name == "Test" {
					if fl := r.testFunc(x.Name); fl != nil {
						body = fl.Body
					}
				}
			}
		}
	}
	if body == nil {
		t.Unread = append(t.Unread, "no Test function")
		return t
	}
	// First pass: clients, local values and which client sends which
	// variable's cases. (What it cannot read there is no case: not
	// reported.)
	defer func(saved []string) { r.unread = saved }(r.unread)
	ast.Inspect(body, func(n ast.Node) bool {
		switch s := n.(type) {
		case *ast.AssignStmt:
			for i, lhs := range s.Lhs {
				id, ok := lhs.(*ast.Ident)
				if !ok || i >= len(s.Rhs) {
					continue
				}
				if c, ok := r.client(s.Rhs[i]); ok {
					r.clients[id.Name] = c
				} else if v := r.eval(s.Rhs[i]); v != nil && s.Tok == token.DEFINE {
					if _, isMap := v.(map[string]any); !isMap {
						r.env[id.Name] = v
					}
				}
				if typeName(compositeType(s.Rhs[i])) == "map[string]float64" {
					t.Weights = map[string]float64{}
					for k, v := range r.eval(s.Rhs[i]).(map[string]any) {
						f, _ := v.(float64)
						t.Weights[k] = f
					}
				}
			}
		case *ast.RangeStmt:
			if id, ok := s.X.(*ast.Ident); ok {
				if c := r.sender(s.Body); c != "" {
					r.varClient[id.Name] = c
				}
			}
		case *ast.CallExpr:
			if sel, ok := s.Fun.(*ast.SelectorExpr); ok && isRequestCall(sel.Sel.Name) && len(s.Args) > 1 {
				if x, ok := sel.X.(*ast.Ident); ok {
					if id, ok := s.Args[1].(*ast.Ident); ok {
						r.varClient[id.Name] = x.Name
					}
				}
			}
		}
		return true
	})
	r.unread = nil
	// Second pass: every http.ExpectedResponse literal, with the variable
	// (or the call) that holds it.
	var stack []ast.Node
	ast.Inspect(body, func(n ast.Node) bool {
		if n == nil {
			stack = stack[:len(stack)-1]
			return true
		}
		stack = append(stack, n)
		cl, ok := n.(*ast.CompositeLit)
		if !ok {
			return true
		}
		name := typeName(cl.Type)
		isCase := name == "http.ExpectedResponse"
		if cl.Type == nil && len(stack) >= 2 {
			if parent, ok := stack[len(stack)-2].(*ast.CompositeLit); ok && typeName(parent.Type) == "[]http.ExpectedResponse" {
				isCase = true
			}
		}
		if !isCase {
			return true
		}
		clientVar := ""
		for i := len(stack) - 2; i >= 0 && clientVar == ""; i-- {
			switch p := stack[i].(type) {
			case *ast.AssignStmt:
				if id, ok := p.Lhs[0].(*ast.Ident); ok {
					clientVar = r.varClient[id.Name]
					if clientVar == "" {
						clientVar = "?" + id.Name
					}
				}
			case *ast.CallExpr:
				if sel, ok := p.Fun.(*ast.SelectorExpr); ok && isRequestCall(sel.Sel.Name) {
					if x, ok := sel.X.(*ast.Ident); ok {
						clientVar = x.Name
					}
				}
			}
		}
		stack = stack[:len(stack)-1] // Inspect does not call f(nil) after false
		c := r.expected(cl)
		if cv, ok := r.clients[clientVar]; ok {
			c.Client = cv
		} else if len(r.clients) == 1 {
			for _, cv := range r.clients {
				c.Client = cv
			}
		} else {
			r.unread = append(r.unread, fmt.Sprintf("case %q: cannot tell which client sends it (%s)", c.Name, clientVar))
		}
		t.Cases = append(t.Cases, c)
		return false
	})
	t.Unread = append(t.Unread, r.unread...)
	r.unread = nil
	return t
}

func compositeType(e ast.Expr) ast.Expr {
	if cl, ok := e.(*ast.CompositeLit); ok {
		return cl.Type
	}
	return nil
}

func isRequestCall(name string) bool {
	return strings.HasPrefix(name, "MakeRequest") || strings.HasPrefix(name, "RequestBatch") || strings.HasPrefix(name, "CaptureRequestResponseAndCompare")
}

// sender: the client variable whose request method a block calls.
func (r *reader) sender(b *ast.BlockStmt) string {
	found := ""
	ast.Inspect(b, func(n ast.Node) bool {
		if call, ok := n.(*ast.CallExpr); ok && found == "" {
			if sel, ok := call.Fun.(*ast.SelectorExpr); ok && isRequestCall(sel.Sel.Name) {
				if x, ok := sel.X.(*ast.Ident); ok {
					found = x.Name
				}
			}
		}
		return found == ""
	})
	return found
}

// client reads echo.ConnectToApp(t, s, app) and
// echo.ConnectToAppInNamespace(t, s, app, namespace).
func (r *reader) client(e ast.Expr) (Client, bool) {
	call, ok := e.(*ast.CallExpr)
	if !ok {
		return Client{}, false
	}
	switch typeName(call.Fun) {
	case "echo.ConnectToApp":
		if len(call.Args) == 3 {
			app, _ := r.eval(call.Args[2]).(string)
			return Client{App: app, Namespace: r.consts["suite.MeshNamespace"]}, true
		}
	case "echo.ConnectToAppInNamespace":
		if len(call.Args) == 4 {
			app, _ := r.eval(call.Args[2]).(string)
			ns, _ := r.eval(call.Args[3]).(string)
			return Client{App: app, Namespace: ns}, true
		}
	}
	return Client{}, false
}

// expected reads one http.ExpectedResponse.
func (r *reader) expected(cl *ast.CompositeLit) Case {
	v, _ := r.eval(cl).(map[string]any)
	c := Case{}
	str := func(m map[string]any, k string) string {
		s, ok := m[k].(string)
		if !ok && m[k] != nil {
			r.unread = append(r.unread, fmt.Sprintf("field %s: %T", k, m[k]))
		}
		return s
	}
	strMap := func(m map[string]any, k string) map[string]string {
		raw, _ := m[k].(map[string]any)
		if raw == nil {
			return nil
		}
		out := map[string]string{}
		for k, v := range raw {
			out[k], _ = v.(string)
		}
		return out
	}
	strList := func(m map[string]any, k string) []string {
		var out []string
		l, _ := m[k].([]any)
		for _, x := range l {
			s, _ := x.(string)
			out = append(out, s)
		}
		return out
	}
	c.Name = str(v, "TestCaseName")
	c.Backend = str(v, "Backend")
	c.Namespace = str(v, "Namespace")
	req, _ := v["Request"].(map[string]any)
	if pa, ok := req["Host"].(podAddr); ok {
		if cl, ok := r.clients[pa.client]; ok {
			c.HostPod = &cl
		} else {
			r.unread = append(r.unread, "the address of "+pa.client+", which is no client")
		}
		c.HostSuffix = pa.suffix
		delete(req, "Host")
	}
	c.Host, c.Method, c.Path, c.Protocol = str(req, "Host"), str(req, "Method"), str(req, "Path"), str(req, "Protocol")
	c.Headers = strMap(req, "Headers")
	resp, _ := v["Response"].(map[string]any)
	if code, ok := resp["StatusCode"].(int); ok && code != 0 {
		c.StatusCodes = append(c.StatusCodes, code)
	}
	if l, ok := resp["StatusCodes"].([]any); ok {
		for _, x := range l {
			if code, ok := x.(int); ok {
				c.StatusCodes = append(c.StatusCodes, code)
			}
		}
	}
	c.ResponseHeaders = strMap(resp, "Headers")
	c.AbsentResponseHeaders = strList(resp, "AbsentHeaders")
	if rr, ok := v["RedirectRequest"].(map[string]any); ok {
		c.Redirect = &Redirect{Scheme: str(rr, "Scheme"), Host: str(rr, "Host"), Port: str(rr, "Port"), Path: str(rr, "Path")}
	}
	if er, ok := v["ExpectedRequest"].(map[string]any); ok {
		inner, _ := er["Request"].(map[string]any)
		c.RequestHeaders = strMap(inner, "Headers")
		c.AbsentRequestHeaders = strList(er, "AbsentHeaders")
	}
	return c
}

// eval interprets the expressions conformance tests write: literals,
// struct and map literals, constants of the suite and echo packages,
// local variables, string concatenation, and a pod's address.
func (r *reader) eval(e ast.Expr) any {
	switch x := e.(type) {
	case *ast.BasicLit:
		switch x.Kind {
		case token.STRING:
			s, _ := strconv.Unquote(x.Value)
			return s
		case token.INT:
			n, _ := strconv.Atoi(x.Value)
			return n
		case token.FLOAT:
			f, _ := strconv.ParseFloat(x.Value, 64)
			return f
		}
	case *ast.Ident:
		switch x.Name {
		case "true":
			return true
		case "false":
			return false
		case "nil":
			return nil
		}
		if v, ok := r.env[x.Name]; ok {
			return v
		}
		r.unread = append(r.unread, "identifier "+x.Name)
	case *ast.SelectorExpr:
		name := typeName(x)
		if v, ok := r.consts[name]; ok {
			return v
		}
		if strings.HasPrefix(name, "http.StatusText") {
			return nil
		}
		r.unread = append(r.unread, "name "+name)
	case *ast.UnaryExpr:
		if x.Op == token.AND {
			return r.eval(x.X)
		}
	case *ast.BinaryExpr:
		if x.Op == token.ADD {
			a, b := r.eval(x.X), r.eval(x.Y)
			if pa, ok := a.(podAddr); ok {
				if s, ok := b.(string); ok {
					pa.suffix += s
					return pa
				}
			}
			as, ok1 := a.(string)
			bs, ok2 := b.(string)
			if ok1 && ok2 {
				return as + bs
			}
		}
	case *ast.CallExpr:
		// http.Ipv6SafeHost(v2.Address): the address of client v2's pod.
		if typeName(x.Fun) == "http.Ipv6SafeHost" && len(x.Args) == 1 {
			if sel, ok := x.Args[0].(*ast.SelectorExpr); ok && sel.Sel.Name == "Address" {
				if id, ok := sel.X.(*ast.Ident); ok {
					return podAddr{client: id.Name}
				}
			}
		}
		r.unread = append(r.unread, "call "+typeName(x.Fun))
	case *ast.CompositeLit:
		switch t := typeName(x.Type); {
		case strings.HasPrefix(t, "[]") || (x.Type == nil && len(x.Elts) > 0 && !isKV(x.Elts[0])):
			var out []any
			for _, el := range x.Elts {
				out = append(out, r.eval(el))
			}
			return out
		default:
			out := map[string]any{}
			for _, el := range x.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				var k string
				switch key := kv.Key.(type) {
				case *ast.Ident:
					k = key.Name
				default:
					k, _ = r.eval(key).(string)
				}
				out[k] = r.eval(kv.Value)
			}
			return out
		}
	}
	return nil
}

func isKV(e ast.Expr) bool { _, ok := e.(*ast.KeyValueExpr); return ok }
