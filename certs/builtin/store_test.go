package builtin

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testing/testenv"
)

// env is one real API server for this test binary.
var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(func() int {
		// Unit tests and benchmarks alone need no API server.
		if !needsAPIServer() {
			return m.Run()
		}
		var err error
		if env, err = testenv.New(testenv.Options{}); err != nil {
			fmt.Fprintln(os.Stderr, "starting the test API server:", err)
			return 1
		}
		defer func() { _ = env.Stop() }()
		return m.Run()
	}())
}

// needsAPIServer is false when -run selects no test of the root store
// (e.g. `go test -run '^$' -bench .`).
func needsAPIServer() bool {
	for i, a := range os.Args {
		if v, ok := strings.CutPrefix(a, "-test.run="); ok {
			return strings.Contains(v, "Store") || v == ""
		}
		if a == "-test.run" && i+1 < len(os.Args) {
			return strings.Contains(os.Args[i+1], "Store")
		}
	}
	return true
}

func createNamespace(t *testing.T, ctx context.Context) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "weft-system-"}}
	if err := env.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// barrierClient holds every first Get until all racers have made theirs, so
// that each of them sees "not found" and goes on to Create.
type barrierClient struct {
	client.Client
	once    sync.Once
	barrier *sync.WaitGroup
}

func (c *barrierClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := c.Client.Get(ctx, key, obj, opts...)
	c.once.Do(func() { c.barrier.Done(); c.barrier.Wait() })
	return err
}

func TestRootStoreLeaderRaceAndReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := createNamespace(t, ctx)

	replica := &RootStore{Client: env.Client, Namespace: ns, TrustDomain: "cluster.local"}
	if _, err := replica.Load(ctx); !errors.Is(err, ErrRootNotFound) {
		t.Fatalf("Load before any leader: err = %v, want ErrRootNotFound", err)
	}

	// Two replicas both believe they lead (a lease handover): both read
	// "not found", both create; the API server lets one win.
	const racers = 2
	var barrier sync.WaitGroup
	barrier.Add(racers)
	roots := make([]*KeyPair, racers)
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			s := &RootStore{Client: &barrierClient{Client: env.Client, barrier: &barrier}, Namespace: ns, TrustDomain: "cluster.local"}
			roots[i], errs[i] = s.Ensure(ctx)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	if !roots[0].Cert.Equal(roots[1].Cert) {
		t.Fatal("the racing leaders ended with different roots")
	}

	var list corev1.SecretList
	if err := env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != DefaultSecretName || list.Items[0].Type != corev1.SecretTypeTLS {
		t.Fatalf("secrets = %v, want one kubernetes.io/tls Secret %s", list.Items, DefaultSecretName)
	}
	sec := list.Items[0]
	if string(sec.Data["ca.crt"]) != string(sec.Data["tls.crt"]) || sec.Annotations[TrustDomainAnnotation] != "cluster.local" {
		t.Errorf("Secret layout: ca.crt == tls.crt %v, annotations %v", string(sec.Data["ca.crt"]) == string(sec.Data["tls.crt"]), sec.Annotations)
	}

	// A replica loads the same root; a certificate one replica signs
	// verifies against the root another replica serves in its bundle.
	loaded, err := replica.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(roots[0].Cert) {
		t.Fatal("replica loaded a different root")
	}
	issA, err := NewIssuer(roots[0], Options{})
	if err != nil {
		t.Fatal(err)
	}
	issued, key := signFor(t, issA, cart, time.Hour)
	if err := issued.Verify(cart, key.Public(), []*x509.Certificate{loaded.Cert}, time.Now()); err != nil {
		t.Fatalf("certificate from replica A against replica B's root: %v", err)
	}

	// Ensure on an existing root is a read, not a second create.
	again, err := (&RootStore{Client: env.Client, Namespace: ns, TrustDomain: "cluster.local"}).Ensure(ctx)
	if err != nil || !again.Cert.Equal(loaded.Cert) {
		t.Fatalf("Ensure with the root present: %v", err)
	}
}

func TestRootStoreRejectsBrokenSecretsWithoutLeakingThem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := createNamespace(t, ctx)

	root, err := NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewRoot("cluster.local", time.Now(), time.Hour)
	certPEM := certs.EncodeCertificatesPEM([]*x509.Certificate{root.Cert})
	keyPEM, _ := certs.EncodeKeyPEM(root.Signer())
	otherKey, _ := certs.EncodeKeyPEM(other.Signer())
	secretish := "-----BEGIN PRIVATE KEY-----\nU0VDUkVUU0VDUkVUU0VDUkVU\n-----END PRIVATE KEY-----\n"
	leafIss, _ := NewIssuer(root, Options{})
	leaf, _ := signFor(t, leafIss, cart, time.Hour)

	cases := []struct {
		name     string
		crt, key []byte
		want     string
	}{
		{"garbage key", certPEM, []byte(secretish), "tls.key cannot be parsed as a private key"},
		{"key of another root", certPEM, otherKey, "does not match"},
		{"key in the certificate field", keyPEM, keyPEM, `unexpected PEM block of type "PRIVATE KEY"`},
		{"leaf instead of a CA", leaf.ChainPEM(), keyPEM, "is not a CA certificate"},
		{"no key", certPEM, nil, "tls.key holds no PEM block"},
	}
	for i, c := range cases {
		name := fmt.Sprintf("broken-%d", i)
		sec := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Data:       map[string][]byte{"tls.crt": c.crt, "tls.key": c.key},
		}
		if err := env.Client.Create(ctx, sec); err != nil {
			t.Fatal(err)
		}
		_, err := (&RootStore{Client: env.Client, Namespace: ns, Name: name}).Load(ctx)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), ns+"/"+name) {
			t.Errorf("%s: err = %v, want %q naming the Secret", c.name, err, c.want)
			continue
		}
		for _, secret := range []string{"U0VDUkVU", string(keyPEM[28:60]), string(otherKey[28:60])} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error leaks key material: %v", c.name, err)
			}
		}
	}
}
