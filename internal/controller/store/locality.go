package store

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/weftmesh/weft/dataplane"
)

// Where proxies run, for locality-aware routing (docs/design/171): a
// proxy's Pod names its Node (spec.nodeName), whose
// topology.kubernetes.io/zone and /region labels say where it is. Nodes
// are watched metadata-only (labels are metadata; the cache holds no
// status, images or conditions), and only the two labels are kept. A
// Node is no translator input: its changes make no batch.

// nodeLocality is a Node's topology labels, the two weft reads.
type nodeLocality struct{ region, zone string }

// watchNodes keeps s.nodes: each Node's topology labels.
func watchNodes(s *Store, c cache.Cache) error {
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Node"))
	inf, err := c.GetInformer(context.Background(), obj, cache.BlockUntilSynced(false))
	if err != nil {
		return err
	}
	put := func(o any) {
		m, ok := o.(metav1.Object)
		if !ok {
			return
		}
		l := m.GetLabels()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.nodes == nil {
			s.nodes = map[string]nodeLocality{}
		}
		s.nodes[m.GetName()] = nodeLocality{l[dataplane.LabelTopologyRegion], l[dataplane.LabelTopologyZone]}
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    put,
		UpdateFunc: func(_, o any) { put(o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if m, ok := o.(metav1.Object); ok {
				s.mu.Lock()
				defer s.mu.Unlock()
				delete(s.nodes, m.GetName())
			}
		},
	})
	if err != nil {
		return err
	}
	s.synced = append(s.synced, reg)
	return nil
}

// Locality says where the pod namespace/name runs: its Node's region and
// zone labels or, when its Node is unknown or has no zone label, the
// pod's own topology labels (which the PodTopologyLabels admission plugin
// copies from the Node); empty when neither says. It is the xDS server's
// Locator (xds.ADS.SetLocator): the zone comes from the cluster, not from
// what the proxy claims.
func (s *Store) Locality(namespace, name string) (region, zone string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pods.objs[types.NamespacedName{Namespace: namespace, Name: name}]
	if !ok {
		return "", ""
	}
	var node map[string]string
	if n, ok := s.nodes[p.Spec.NodeName]; ok && p.Spec.NodeName != "" {
		node = map[string]string{dataplane.LabelTopologyRegion: n.region, dataplane.LabelTopologyZone: n.zone}
	}
	return dataplane.Locality(node, p.Labels)
}
