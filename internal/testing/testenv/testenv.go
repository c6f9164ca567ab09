// Package testenv runs a real Kubernetes API server (etcd + kube-apiserver)
// for integration tests and for `make run`.
//
// The binaries come from bin/, built from Go modules by
// hack/build-testbins.sh; New runs that script first, so a test never skips
// for lack of binaries (the first run builds for several minutes, later runs
// reuse what is there). Every CRD under crds/ is installed, together with the
// real CRDs of cert-manager and Gateway API, read from the exact module
// versions in go.mod.
package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	weftv1alpha1 "github.com/weftmesh/weft/crds/v1alpha1"
)

// External CRDs installed beside weft's own: module path → folder of CRD
// YAML inside that module.
var externalCRDs = map[string]string{
	"github.com/cert-manager/cert-manager": "deploy/crds",
	"sigs.k8s.io/gateway-api":              "config/crd/standard",
}

// Scheme knows the built-in kinds, cert-manager's and Gateway API's. Weft's
// own kinds are added by AddToScheme as the API package grows.
var Scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(Scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(Scheme))
	utilruntime.Must(certmanagerv1.AddToScheme(Scheme))
	utilruntime.Must(gatewayv1.Install(Scheme))
	utilruntime.Must(gatewayv1beta1.Install(Scheme))
	utilruntime.Must(weftv1alpha1.AddToScheme(Scheme))
}

// Env is a running API server with the CRDs installed.
type Env struct {
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// Client is a controller-runtime client with Scheme.
	Client client.Client
	// Kubeconfig is a kubeconfig file for the same admin user, for kubectl
	// and for processes under test.
	Kubeconfig string
	// Root is the repository root; BinDir holds kube-apiserver, etcd and
	// kubectl.
	Root, BinDir string

	env *envtest.Environment
	dir string

	apiMu sync.Mutex
	api   *apiServer // set once StopAPIServer ran (restart.go)
}

// Options adjust New. The zero value is what tests want.
type Options struct {
	// Dir holds the etcd data, certificates and kubeconfig. Empty means a
	// new temporary folder, removed by Stop.
	Dir string
	// Progress, if set, receives the build script's progress lines.
	Progress *os.File
	// ServiceCIDR replaces envtest's --service-cluster-ip-range
	// (10.0.0.0/24, 254 Services) for clusters with more Services (the
	// load tool's).
	ServiceCIDR string
	// AggregatorRouting makes the API server reach Services (admission
	// webhooks among them) at an address from their EndpointSlices rather
	// than their cluster IP, which nothing routes here (no kube-proxy):
	// kube-apiserver --enable-aggregator-routing. localmesh registers
	// weft's webhook by its Service, as an install does.
	AggregatorRouting bool
}

// Start starts an API server for one test and stops it when the test ends.
func Start(t testing.TB) *Env {
	t.Helper()
	e, err := New(Options{})
	if err != nil {
		t.Fatalf("starting the test API server: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("stopping the test API server: %v", err)
		}
	})
	return e
}

// New builds the binaries if needed, starts etcd and kube-apiserver, and
// installs the CRDs. Call Stop to end the processes and remove the folder.
func New(o Options) (*Env, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	bin, err := EnsureBinaries(root, o.Progress)
	if err != nil {
		return nil, err
	}
	crdDirs, err := crdDirectories(root)
	if err != nil {
		return nil, err
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "weft-testenv-"); err != nil {
			return nil, err
		}
	}
	for _, sub := range []string{"etcd", "apiserver"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}

	env := &envtest.Environment{
		BinaryAssetsDirectory: bin,
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: true,
		Scheme:                Scheme,
		// Two cores shared by parallel test packages: be patient.
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: filepath.Join(dir, "etcd")}
	api := &envtest.APIServer{CertDir: filepath.Join(dir, "apiserver")}
	// There is no controller-manager to reconcile the kubernetes Service's
	// endpoints, and a 127.0.0.1 advertise address makes the default
	// reconciler fail; nothing in weft needs those endpoints.
	api.Configure().Set("endpoint-reconciler-type", "none")
	if o.ServiceCIDR != "" {
		api.Configure().Set("service-cluster-ip-range", o.ServiceCIDR)
	}
	if o.AggregatorRouting {
		api.Configure().Set("enable-aggregator-routing", "true")
	}
	env.ControlPlane.APIServer = api

	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		if o.Dir == "" {
			_ = os.RemoveAll(dir)
		}
		return nil, fmt.Errorf("starting etcd and kube-apiserver from %s: %w", bin, err)
	}
	e := &Env{Config: cfg, Root: root, BinDir: bin, env: env}
	if o.Dir == "" {
		e.dir = dir
	}
	if e.Client, err = client.New(cfg, client.Options{Scheme: Scheme}); err != nil {
		_ = e.Stop()
		return nil, err
	}
	if e.Kubeconfig, err = writeKubeconfig(env, filepath.Join(dir, "kubeconfig")); err != nil {
		_ = e.Stop()
		return nil, err
	}
	return e, nil
}

// Stop ends etcd and kube-apiserver and removes the temporary folder.
func (e *Env) Stop() error {
	// A kube-apiserver StartAPIServer restarted is this Env's, not
	// envtest's: stop it before envtest stops etcd.
	err := errors.Join(e.stopRestarted(), e.env.Stop())
	if e.dir != "" {
		err = errors.Join(err, os.RemoveAll(e.dir))
	}
	return err
}

// Kubectl runs the built kubectl against the API server and returns its
// standard output; an error carries standard error.
func (e *Env) Kubectl(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.BinDir, "kubectl"), append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func writeKubeconfig(env *envtest.Environment, path string) (string, error) {
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "weft-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", fmt.Errorf("creating the admin user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, kc, 0o600)
}

// RepoRoot finds the weft module's root folder from the working directory
// (a package folder under `go test`, the root under `make run`).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module github.com/weftmesh/weft\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the weft repository (no go.mod of github.com/weftmesh/weft above the working directory)")
		}
		dir = parent
	}
}

var buildMu sync.Mutex

// EnsureBinaries runs hack/build-testbins.sh, which builds what is missing or
// of the wrong version and returns at once otherwise, and returns bin/.
func EnsureBinaries(root string, progress *os.File) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	bin := filepath.Join(root, "bin")
	cmd := exec.Command("bash", filepath.Join(root, "hack", "build-testbins.sh"))
	cmd.Env = append(os.Environ(), "WEFT_BIN_DIR="+bin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if progress != nil {
		cmd.Stdout, cmd.Stderr = progress, progress
	}
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("hack/build-testbins.sh: %w\n%s", err, out.String())
	}
	return bin, nil
}

var (
	modDirsOnce sync.Once
	modDirs     map[string]string
	modDirsErr  error
)

// crdDirectories lists crds/ and the external CRD folders, located in the
// module cache at the versions go.mod requires.
func crdDirectories(root string) ([]string, error) {
	modDirsOnce.Do(func() { modDirs, modDirsErr = moduleDirs(root) })
	if modDirsErr != nil {
		return nil, modDirsErr
	}
	dirs := []string{filepath.Join(root, "crds")}
	for mod, sub := range externalCRDs {
		dirs = append(dirs, filepath.Join(modDirs[mod], sub))
	}
	return dirs, nil
}

func moduleDirs(root string) (map[string]string, error) {
	args := []string{"mod", "download", "-json"}
	for mod := range externalCRDs {
		args = append(args, mod)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	dirs := map[string]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var m struct{ Path, Dir, Error string }
		if err := dec.Decode(&m); err != nil {
			return nil, err
		}
		if m.Error != "" || m.Dir == "" {
			return nil, fmt.Errorf("locating module %s: %s", m.Path, m.Error)
		}
		dirs[m.Path] = m.Dir
	}
	for mod := range externalCRDs {
		if dirs[mod] == "" {
			return nil, fmt.Errorf("module %s is not in go.mod", mod)
		}
	}
	return dirs, nil
}

// AsController applies config/rbac and returns a config that impersonates
// weft-controller's ServiceAccount, so that a component under test runs
// with exactly the rights the install gives it (the real authorizer checks
// every call). The weft-system namespace must exist.
func (e *Env) AsController(t testing.TB) *rest.Config {
	t.Helper()
	if out, err := e.Kubectl(context.Background(), nil, "apply", "-k", filepath.Join(e.Root, "config", "rbac")); err != nil {
		t.Fatalf("applying config/rbac: %v\n%s", err, out)
	}
	cfg := rest.CopyConfig(e.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:weft-system:weft-controller",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:weft-system", "system:authenticated"},
	}
	return cfg
}
