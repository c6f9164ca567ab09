package ir

import (
	"reflect"
	"sort"
)

// Change is what differs between two models: enough for the xDS server to
// tell which proxies' configuration a new model can alter (xds.affects),
// so that a policy or Service change rebuilds only those.
type Change struct {
	// MeshWide is set when any setting outside Services and Namespaces
	// differs (trust domain, default mTLS mode, outbound policy, access
	// log, tracing, and any field added to Mesh later): every proxy's
	// configuration may read those.
	MeshWide bool
	// Services added, removed or changed, sorted by key.
	Services []ServiceChange
	// Namespaces whose settings (mTLS mode, AuthPolicies) were added,
	// removed or changed, sorted.
	Namespaces []string
}

// ServiceChange is one Service as it was and as it is: Old is nil for an
// added Service, New for a removed one.
type ServiceChange struct {
	Key      ServiceKey
	Old, New *Service
}

// Empty says the two models are the same.
func (c *Change) Empty() bool {
	return !c.MeshWide && len(c.Services) == 0 && len(c.Namespaces) == 0
}

// Diff compares two models by content. Parts are compared by pointer
// first (UpdateEndpoints shares every unchanged Service with its
// predecessor), then deeply, since a full translation makes a new model
// whose unchanged parts are equal but not shared. A nil model is empty.
//
// Comparing deeply errs on the safe side: anything that differs, even in
// a way no proxy's configuration shows, is reported as changed.
func Diff(old, new *Mesh) Change {
	if old == nil {
		old = &Mesh{}
	}
	if new == nil {
		new = &Mesh{}
	}
	var c Change
	if old == new {
		return c
	}
	c.MeshWide = !sameSettings(old, new)
	// Services: both lists are sorted by key; walk them together.
	i, j := 0, 0
	for i < len(old.Services) || j < len(new.Services) {
		switch {
		case j == len(new.Services) || i < len(old.Services) && old.Services[i].Key.Less(new.Services[j].Key):
			c.Services = append(c.Services, ServiceChange{Key: old.Services[i].Key, Old: old.Services[i]})
			i++
		case i == len(old.Services) || new.Services[j].Key.Less(old.Services[i].Key):
			c.Services = append(c.Services, ServiceChange{Key: new.Services[j].Key, New: new.Services[j]})
			j++
		default:
			o, n := old.Services[i], new.Services[j]
			if o != n && !o.Equal(n) {
				c.Services = append(c.Services, ServiceChange{Key: n.Key, Old: o, New: n})
			}
			i++
			j++
		}
	}
	for name, o := range old.Namespaces {
		if n := new.Namespaces[name]; o != n && !reflect.DeepEqual(o, n) {
			c.Namespaces = append(c.Namespaces, name)
		}
	}
	for name := range new.Namespaces {
		if _, ok := old.Namespaces[name]; !ok {
			c.Namespaces = append(c.Namespaces, name)
		}
	}
	sort.Strings(c.Namespaces)
	return c
}

// sameSettings compares every exported field of Mesh except Services and
// Namespaces, by reflection, so that a setting added to Mesh later counts
// as mesh-wide without anyone having to remember this function.
func sameSettings(old, new *Mesh) bool {
	o, n := reflect.ValueOf(old).Elem(), reflect.ValueOf(new).Elem()
	t := o.Type()
	for f := 0; f < t.NumField(); f++ {
		field := t.Field(f)
		if !field.IsExported() || field.Name == "Services" || field.Name == "Namespaces" {
			continue
		}
		if !reflect.DeepEqual(o.Field(f).Interface(), n.Field(f).Interface()) {
			return false
		}
	}
	return true
}
