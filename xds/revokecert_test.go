package xds_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	weftxds "github.com/weftmesh/weft/xds"
)

// saSet plays the cluster's ServiceAccounts (weft-controller reads its
// informer's cache: internal/controller/trust.ServiceAccounts, tested
// against the API server there).
type saSet struct {
	mu sync.Mutex
	m  map[string]bool
}

func (s *saSet) ServiceAccountExists(_ context.Context, ns, name string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[ns+"/"+name], nil
}

func (s *saSet) remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
}

// TestCertificateReconnectAfterServiceAccountDeleted (issue 13, item 3;
// 073's "not done"): a proxyless workload authenticated by its workload
// certificate on the TLS port is served its keys; its ServiceAccount is
// deleted, its stream ends (ADS.ServiceAccountGone, as the store's batch
// calls it), and a reconnect with the same, still-valid certificate is
// refused with PermissionDenied naming the service account — before, it
// was admitted and served that identity's key again for up to the
// certificate's lifetime (24 h by default).
func TestCertificateReconnectAfterServiceAccountDeleted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root, err := builtin.NewRoot("cluster.local", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sas := &saSet{m: map[string]bool{"shop/greeter": true}}
	ads := weftxds.NewADS(logr.Discard())
	ads.SetSecrets(&caSecrets{t: t, root: root, mat: map[string][3][]byte{}})
	ads.SetAuthenticator(weftxds.CertificateAuthenticator{Roots: func() *x509.CertPool {
		p := x509.NewCertPool()
		p.AddCert(root.Cert)
		return p
	}, ServiceAccounts: sas})
	ads.Update(translator.Translate(&translator.Inputs{}).Mesh, time.Now())
	tlsAddr, rootFile, _ := serveADS(t, ads)

	// The workload's certificate, valid for another hour.
	id := certs.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "greeter"}
	key, _ := certs.NewWorkloadKey()
	leaf, err := builtin.SignLeaf(root, id, key.Public(), time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(rootFile)
	if err != nil {
		t.Fatal(err)
	}
	serverRoots := x509.NewCertPool()
	serverRoots.AppendCertsFromPEM(caPEM)
	creds := credentials.NewTLS(&tls.Config{RootCAs: serverRoots, Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}}})

	open := func() (discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, *discoveryv3.DeltaDiscoveryResponse, error) {
		conn, err := grpc.NewClient(tlsAddr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
		if err != nil {
			return nil, nil, err
		}
		n := node("greeter-0.shop", "shop", "greeter")
		n.Metadata.Fields[dataplane.MetaProxyKind] = structpb.NewStringValue(dataplane.KindNameGRPC)
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: n, TypeUrl: resourcev3.SecretType,
			ResourceNamesSubscribe: []string{dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret}}); err != nil {
			return nil, nil, err
		}
		r, err := st.Recv()
		return st, r, err
	}

	st, r, err := open()
	if err != nil || len(r.GetResources()) == 0 {
		t.Fatalf("while the service account exists: %v, %d secrets; want its secrets", err, len(r.GetResources()))
	}

	sas.remove("shop/greeter")
	if n := ads.ServiceAccountGone("shop", "greeter"); n != 1 {
		t.Fatalf("ServiceAccountGone ended %d streams, want 1", n)
	}
	for {
		if _, err := st.Recv(); err != nil {
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("the stream ended with %v, want Unauthenticated", err)
			}
			break
		}
	}

	_, r, err = open()
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "service account shop/greeter no longer exists") {
		t.Fatalf("reconnecting with the still-valid certificate: %v (%d secrets); want PermissionDenied naming the service account", err, len(r.GetResources()))
	}
	t.Log(err)
}
