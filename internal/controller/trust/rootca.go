// Package rootca publishes the mesh's trust bundle to workloads. On the
// leader it makes sure the built-in root CA exists (builtin.RootStore.Ensure)
// and writes the ConfigMap weft-root-ca (key root-cert.pem) into every
// namespace whose pods need it: namespaces labelled weft.dev/inject=enabled,
// and namespaces with a pod that has the weft-proxy or weft-agent container (pods opted in
// one by one). The injected proxy mounts it to verify weft-controller's xDS
// serving certificate.
//
// The ConfigMap is kept equal to the root Secret's trust bundle (ca.crt:
// every root a rotation currently trusts; tls.crt when ca.crt is absent):
// the Secret is re-read every Resync, and a changed bundle is written to
// every namespace. A ConfigMap that is deleted or edited is put back. weft
// never deletes one: a namespace that stops being meshed may still run
// injected pods that mount it.
package trust

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
)

// RootCAKey is the ConfigMap key holding the PEM trust bundle.
const RootCAKey = dataplane.RootCertFile

// DefaultResync is how often the leader re-reads the root Secret.
const DefaultResync = time.Minute

// RootPublisherOptions configure the RootPublisher.
type RootPublisherOptions struct {
	// Namespace and SecretName locate the root Secret; defaults
	// builtin.DefaultNamespace and builtin.DefaultSecretName.
	Namespace, SecretName string
	// Resync is how often the root Secret is re-read.
	Resync time.Duration
}

// RootPublisher is the leader's runnable.
type RootPublisher struct {
	o       RootPublisherOptions
	mgr     manager.Manager
	direct  client.Client // Secrets and MeshConfig, uncached
	cmCache cache.Cache   // only ConfigMaps named weft-root-ca; one per leader term
	started bool          // Start ran before: the next needs a new cmCache
	log     logr.Logger

	bundle  atomic.Pointer[[]byte]
	changed chan event.TypedGenericEvent[struct{}]
	reread  chan struct{}
}

// RootChanged makes the publisher re-read the root Secret now rather than
// at the next Resync (the root rotation driver calls it after each step).
func (p *RootPublisher) RootChanged() {
	select {
	case p.reread <- struct{}{}:
	default:
	}
}

// NewRootPublisher returns the publisher; add it to the manager.
func NewRootPublisher(mgr manager.Manager, o RootPublisherOptions, log logr.Logger) (*RootPublisher, error) {
	if o.Namespace == "" {
		o.Namespace = builtin.DefaultNamespace
	}
	if o.SecretName == "" {
		o.SecretName = builtin.DefaultSecretName
	}
	if o.Resync == 0 {
		o.Resync = DefaultResync
	}
	direct, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return nil, err
	}
	// A cache of the weft-root-ca ConfigMaps alone: a field selector on the
	// name keeps other ConfigMaps out of memory, and lets RBAC restrict
	// list and watch to that name.
	p := &RootPublisher{o: o, mgr: mgr, direct: direct, log: log,
		changed: make(chan event.TypedGenericEvent[struct{}], 1), reread: make(chan struct{}, 1)}
	// Made here once so that a bad configuration fails at start; each
	// later leader term makes its own (a cache starts once).
	if p.cmCache, err = p.newCache(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *RootPublisher) newCache() (cache.Cache, error) {
	return cache.New(p.mgr.GetConfig(), cache.Options{
		Scheme: p.mgr.GetScheme(),
		Mapper: p.mgr.GetRESTMapper(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {Field: fields.OneTermEqualSelector("metadata.name", dataplane.RootCAConfigMap)},
		},
	})
}

// NeedLeaderElection: one writer of the root and the ConfigMaps.
func (p *RootPublisher) NeedLeaderElection() bool { return true }

// Start ensures the root, then publishes until ctx is done. It may be
// called again after it returned (each leader term, docs/design/077).
func (p *RootPublisher) Start(ctx context.Context) error {
	if p.started {
		cmCache, err := p.newCache()
		if err != nil {
			return err
		}
		p.cmCache = cmCache
	}
	p.started = true
	store := p.rootStore(ctx)
	backoff := time.Second
	for {
		_, err := store.Ensure(ctx)
		if err == nil {
			break
		}
		p.log.Error(err, "ensuring the mesh root CA", "retryIn", backoff.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, p.o.Resync)
	}
	bundle, err := p.readBundle(ctx)
	for err != nil {
		p.log.Error(err, "reading the mesh trust bundle")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		bundle, err = p.readBundle(ctx)
	}
	p.setBundle(bundle)

	go func() {
		if err := p.cmCache.Start(ctx); err != nil {
			p.log.Error(err, "ConfigMap cache")
		}
	}()
	if !p.cmCache.WaitForCacheSync(ctx) {
		return nil
	}

	c, err := controller.NewTypedUnmanaged[reconcile.Request]("weft-root-ca", controller.TypedOptions[reconcile.Request]{
		Reconciler:         p,
		SkipNameValidation: ptr.To(true),
		LogConstructor:     func(*reconcile.Request) logr.Logger { return p.log },
	})
	if err != nil {
		return err
	}
	// ctx is this leader term's: controller-runtime keeps a source's
	// handler on the manager's shared informers after its controller
	// stopped, so a past term's handler must cost nothing (077).
	byNamespace := func(ctx context.Context, o client.Object) []reconcile.Request {
		if ctx.Err() != nil {
			return nil
		}
		ns := o.GetNamespace()
		if ns == "" {
			ns = o.GetName() // a Namespace
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: ns}}}
	}
	meshedPod := func(ctx context.Context, pod *corev1.Pod) []reconcile.Request {
		if !hasProxy(pod) {
			return nil
		}
		return byNamespace(ctx, pod)
	}
	all := func(ctx context.Context, _ struct{}) []reconcile.Request {
		var list corev1.NamespaceList
		if err := p.mgr.GetClient().List(ctx, &list); err != nil {
			p.log.Error(err, "listing namespaces")
			return nil
		}
		out := make([]reconcile.Request, 0, len(list.Items))
		for _, ns := range list.Items {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: ns.Name}})
		}
		return out
	}
	mgrCache := p.mgr.GetCache()
	for _, src := range []source.TypedSource[reconcile.Request]{
		source.Kind(mgrCache, &corev1.Namespace{}, handler.TypedEnqueueRequestsFromMapFunc(func(ctx context.Context, ns *corev1.Namespace) []reconcile.Request {
			return byNamespace(ctx, ns)
		})),
		source.Kind(mgrCache, &corev1.Pod{}, handler.TypedEnqueueRequestsFromMapFunc(meshedPod)),
		source.Kind(p.cmCache, &corev1.ConfigMap{}, handler.TypedEnqueueRequestsFromMapFunc(func(ctx context.Context, cm *corev1.ConfigMap) []reconcile.Request {
			return byNamespace(ctx, cm)
		})),
		source.Channel(p.changed, handler.TypedEnqueueRequestsFromMapFunc(all)),
	} {
		if err := c.Watch(src); err != nil {
			return err
		}
	}
	go p.pollRoot(ctx)
	p.log.Info("publishing the mesh trust bundle", "configMap", dataplane.RootCAConfigMap, "key", RootCAKey)
	return c.Start(ctx)
}

func (p *RootPublisher) rootStore(ctx context.Context) *builtin.RootStore {
	td := translator.DefaultTrustDomain
	mc := &v1alpha1.MeshConfig{}
	if err := p.direct.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshConfigName}, mc); err == nil && mc.Spec.TrustDomain != "" {
		td = mc.Spec.TrustDomain
	} else if err != nil && !apierrors.IsNotFound(err) && !meta.IsNoMatchError(err) {
		p.log.Error(err, "reading MeshConfig for the trust domain; using the default", "trustDomain", td)
	}
	return &builtin.RootStore{Client: p.direct, Namespace: p.o.Namespace, Name: p.o.SecretName, TrustDomain: td}
}

// readBundle reads the trust bundle from the root Secret: ca.crt, else
// tls.crt, normalised (CA certificates only, no duplicates).
func (p *RootPublisher) readBundle(ctx context.Context) ([]byte, error) {
	key := client.ObjectKey{Namespace: p.o.Namespace, Name: p.o.SecretName}
	sec := &corev1.Secret{}
	if err := p.direct.Get(ctx, key, sec); err != nil {
		return nil, fmt.Errorf("reading the root CA Secret %s: %w", key, err)
	}
	var errs []error
	for _, field := range []string{"ca.crt", corev1.TLSCertKey} {
		roots, err := certs.ParseCertificatesPEM(sec.Data[field])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
			continue
		}
		b, err := certs.NewBundle(roots...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
			continue
		}
		return b.PEM(), nil
	}
	return nil, fmt.Errorf("root CA Secret %s holds no trust bundle: %w", key, errors.Join(errs...))
}

// pollRoot re-reads the root Secret and republishes when the bundle
// changes.
func (p *RootPublisher) pollRoot(ctx context.Context) {
	t := time.NewTicker(p.o.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.reread:
		}
		b, err := p.readBundle(ctx)
		if err != nil {
			p.log.Error(err, "re-reading the mesh trust bundle; keeping the published one")
			continue
		}
		if bytes.Equal(b, p.currentBundle()) {
			continue
		}
		p.setBundle(b)
		p.log.Info("the mesh trust bundle changed; republishing")
		select {
		case p.changed <- event.TypedGenericEvent[struct{}]{}:
		default: // one pending event already covers every namespace
		}
	}
}

// Reconcile writes the ConfigMap into one namespace if it needs it.
func (p *RootPublisher) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	c := p.mgr.GetClient()
	ns := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: req.Name}, ns); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if ns.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	need, err := p.needs(ctx, ns)
	if err != nil || !need {
		return reconcile.Result{}, err
	}
	bundle := string(p.currentBundle())
	cm := &corev1.ConfigMap{}
	err = p.cmCache.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: dataplane.RootCAConfigMap}, cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: dataplane.RootCAConfigMap, Labels: managedLabels()},
			Data:       map[string]string{RootCAKey: bundle},
		}
		if err := p.direct.Create(ctx, cm); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return reconcile.Result{Requeue: true}, nil
			}
			return reconcile.Result{}, fmt.Errorf("creating ConfigMap %s/%s: %w", ns.Name, dataplane.RootCAConfigMap, err)
		}
		p.log.V(1).Info("published the trust bundle", "namespace", ns.Name)
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, err
	}
	if cm.Data[RootCAKey] == bundle {
		return reconcile.Result{}, nil
	}
	cm = cm.DeepCopy()
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[RootCAKey] = bundle
	if err := p.direct.Update(ctx, cm); err != nil {
		return reconcile.Result{}, fmt.Errorf("updating ConfigMap %s/%s: %w", ns.Name, dataplane.RootCAConfigMap, err)
	}
	p.log.V(1).Info("updated the trust bundle", "namespace", ns.Name)
	return reconcile.Result{}, nil
}

// needs reports whether a namespace's pods mount the trust bundle.
func (p *RootPublisher) needs(ctx context.Context, ns *corev1.Namespace) (bool, error) {
	if ns.Labels[dataplane.LabelInject] == dataplane.InjectEnabled {
		return true, nil
	}
	var pods corev1.PodList
	if err := p.mgr.GetClient().List(ctx, &pods, client.InNamespace(ns.Name)); err != nil {
		return false, err
	}
	for i := range pods.Items {
		if hasProxy(&pods.Items[i]) {
			return true, nil
		}
	}
	return false, nil
}

func hasProxy(pod *corev1.Pod) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if c.Name == dataplane.SidecarContainerName || c.Name == dataplane.AgentContainerName {
				return true
			}
		}
	}
	return false
}

func managedLabels() map[string]string {
	return map[string]string{"app.kubernetes.io/managed-by": "weft", "app.kubernetes.io/component": "trust-bundle"}
}

func (p *RootPublisher) currentBundle() []byte {
	if b := p.bundle.Load(); b != nil {
		return *b
	}
	return nil
}

func (p *RootPublisher) setBundle(b []byte) { p.bundle.Store(&b) }
