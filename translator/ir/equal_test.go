package ir

import (
	"reflect"
	"slices"
	"testing"
)

// TestEqualCoversEveryField: Service.Equal, Port.Equal and Route.Equal name
// every field of their types. A field added to one must be compared there (and
// then listed here).
func TestEqualCoversEveryField(t *testing.T) {
	for typ, known := range map[reflect.Type][]string{
		reflect.TypeFor[Service](): {"Key", "ClusterIPs", "Headless", "Selector", "Ports", "ExportTo", "AuthPolicies"},
		reflect.TypeFor[Port]():    {"Name", "Port", "Protocol", "TargetPort", "TargetPortName", "Endpoints", "Routes", "Consumers", "Retry", "TCPBackends", "Backend", "RateLimit"},
		reflect.TypeFor[Route]():   {"Source", "Matches", "Backends", "Retry", "Timeout", "NoTimeout", "RequestHeaders", "ResponseHeaders", "Redirect", "Rewrite", "Mirrors", "BackendTimeout", "NoBackendTimeout", "Fault"},
		reflect.TypeFor[Backend](): {"Unresolved", "Service", "Port", "Weight", "RequestHeaders", "ResponseHeaders"},
	} {
		var fields []string
		for f := range typ.Fields() {
			fields = append(fields, f.Name)
		}
		if !slices.Equal(fields, known) {
			t.Errorf("%s has fields %v; Equal (equal.go) compares %v: compare the new field there, then list it here", typ, fields, known)
		}
	}
}

// TestEqualAgreesWithDeepEqual changes each field of a Service, at every
// depth, one at a time — from a Service with every field set (one element
// per slice and map) and from the zero Service — and checks that Equal
// says what reflect.DeepEqual says: not equal, and equal before the
// change. Nil and empty slices and maps differ, as for DeepEqual.
func TestEqualAgreesWithDeepEqual(t *testing.T) {
	for _, full := range []bool{true, false} {
		base := func() *Service {
			s := &Service{}
			if full {
				fill(reflect.ValueOf(s).Elem())
			}
			return s
		}
		a := base()
		if b := base(); !a.Equal(b) || !reflect.DeepEqual(a, b) {
			t.Fatalf("full=%v: two equal Services differ", full)
		}
		n := 0
		for ; ; n++ {
			b := base()
			k := n
			if !mutate(reflect.ValueOf(b).Elem(), &k) {
				break
			}
			if deep, eq := reflect.DeepEqual(a, b), a.Equal(b); deep != eq || eq {
				t.Errorf("full=%v, change %d: DeepEqual %v, Equal %v\n a: %+v\n b: %+v", full, n, deep, eq, a, b)
			}
			if eq := b.Equal(a); eq {
				t.Errorf("full=%v, change %d: Equal is not symmetric", full, n)
			}
		}
		t.Logf("full=%v: %d single-field changes", full, n)
		if full && n < 100 || n < 10 {
			t.Fatalf("only %d changes: the walk is broken", n)
		}
	}
}

// fill sets every field under v, deterministically.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Field(i).CanSet() {
				fill(v.Field(i))
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0))
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k)
		fill(e)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.String:
		v.SetString("s")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	default:
		panic("fill: " + v.Kind().String())
	}
}

// mutate makes the *n-th change under v (counting down n): a scalar
// changed, a nil pointer set, a slice or map given one more element (or,
// when nil, made empty), a pointer or slice element or struct field
// changed within. It reports whether it made one.
func mutate(v reflect.Value, n *int) bool {
	here := func(change func()) bool {
		if *n == 0 {
			change()
			return true
		}
		*n--
		return false
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return here(func() { v.Set(reflect.New(v.Type().Elem())) })
		}
		return mutate(v.Elem(), n)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Field(i).CanSet() && mutate(v.Field(i), n) {
				return true
			}
		}
		return false
	case reflect.Slice:
		if v.IsNil() && here(func() { v.Set(reflect.MakeSlice(v.Type(), 0, 0)) }) {
			return true
		}
		for i := 0; i < v.Len(); i++ {
			if mutate(v.Index(i), n) {
				return true
			}
		}
		return here(func() { v.Set(reflect.Append(v, reflect.New(v.Type().Elem()).Elem())) })
	case reflect.Map:
		if v.IsNil() && here(func() { v.Set(reflect.MakeMap(v.Type())) }) {
			return true
		}
		return here(func() {
			m := reflect.MakeMap(v.Type())
			for it := v.MapRange(); it.Next(); {
				m.SetMapIndex(it.Key(), it.Value())
			}
			k := reflect.New(v.Type().Key()).Elem()
			k.SetString("another")
			m.SetMapIndex(k, reflect.New(v.Type().Elem()).Elem())
			v.Set(m)
		})
	case reflect.String:
		return here(func() { v.SetString(v.String() + "x") })
	case reflect.Bool:
		return here(func() { v.SetBool(!v.Bool()) })
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return here(func() { v.SetInt(v.Int() + 1) })
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return here(func() { v.SetUint(v.Uint() + 1) })
	case reflect.Float32, reflect.Float64:
		return here(func() { v.SetFloat(v.Float() + 1) })
	}
	panic("mutate: " + v.Kind().String())
}
