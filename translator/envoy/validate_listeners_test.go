package envoy

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Two listeners at one address: Envoy refuses the second, and a
// use_original_dst hand-off would have two candidates (docs/design/182).
func TestConsistencyRefusesListenersSharingAnAddress(t *testing.T) {
	l := func(name, ip string, port uint32) *listenerv3.Listener {
		return &listenerv3.Listener{Name: name, Address: socketAddress(ip, port), BindToPort: wrapperspb.Bool(false),
			DefaultFilterChain: &listenerv3.FilterChain{Name: "d"}}
	}
	ok := &Resources{Listeners: []*listenerv3.Listener{l("a", "10.96.0.10", 80), l("b", "10.96.0.10", 81), l("c", "10.96.0.11", 80)}}
	if err := ok.CheckConsistency(); err != nil {
		t.Errorf("distinct addresses: %v", err)
	}
	dup := &Resources{Listeners: []*listenerv3.Listener{l("a", "10.96.0.10", 80), l("b", "10.96.0.10", 80)}}
	if err := dup.CheckConsistency(); err == nil || !strings.Contains(err.Error(), "both at 10.96.0.10 port 80") {
		t.Errorf("two listeners at 10.96.0.10:80: %v", err)
	}
	twice := &Resources{Listeners: []*listenerv3.Listener{l("a", "10.96.0.10", 80), l("a", "10.96.0.11", 80)}}
	if err := twice.CheckConsistency(); err == nil || !strings.Contains(err.Error(), "defined twice") {
		t.Errorf("two listeners named a: %v", err)
	}
}
