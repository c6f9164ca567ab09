package certagent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
)

// issue signs a real leaf for ns/sa under root, as the control plane
// would send it.
func issue(t testing.TB, root *builtin.KeyPair, ns, sa string) Material {
	t.Helper()
	key, err := certs.NewWorkloadKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := builtin.SignLeaf(root, certs.Identity{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa}, key.Public(), time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := certs.EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	return Material{Chain: certs.EncodeCertificatesPEM([]*x509.Certificate{leaf}), Key: keyPEM, Bundle: certs.EncodeCertificatesPEM([]*x509.Certificate{root.Cert})}
}

func newRoot(t testing.TB) *builtin.KeyPair {
	t.Helper()
	root, err := builtin.NewRoot("cluster.local", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestWriteLayoutAndModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	root := newRoot(t)
	m1 := issue(t, root, "shop", "greeter")
	if err := Write(dir, m1); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{CertFile, KeyFile, RootFile} {
		target, err := os.Readlink(filepath.Join(dir, name))
		if err != nil || target != filepath.Join(dataLink, name) {
			t.Fatalf("%s -> %q, %v; want a symlink through %s", name, target, err, dataLink)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := Read(dir)
	if err != nil || !got.Equal(m1) {
		t.Fatalf("Read = %v, %v; want what was written", got, err)
	}
	// Through the file names, as gRPC reads them.
	chain, _ := os.ReadFile(filepath.Join(dir, CertFile))
	key, _ := os.ReadFile(filepath.Join(dir, KeyFile))
	if _, err := tls.X509KeyPair(chain, key); err != nil {
		t.Fatal(err)
	}

	// Three more versions: only the current and the previous remain.
	var last Material
	for i := 0; i < 3; i++ {
		last = issue(t, root, "shop", "greeter")
		if err := Write(dir, last); err != nil {
			t.Fatal(err)
		}
	}
	versions, _ := filepath.Glob(filepath.Join(dir, versionPrefix+"*"))
	if len(versions) != 2 {
		t.Fatalf("version directories %v, want the current and the previous", versions)
	}
	if got, _ := Read(dir); !got.Equal(last) {
		t.Fatal("Read does not return the last version written")
	}
	if strings.Contains(last.String(), string(last.Key)) || strings.Contains(last.GoString(), "PRIVATE") {
		t.Fatal("Material's String shows the key")
	}
}

// TestWriteSwitchesTogether: readers racing a writer that replaces the
// certificate 30 times. A reader that resolves the version once (as
// Read does) always gets a matching certificate and key; one that reads
// the two file names one after the other, as gRPC's file_watcher does,
// never sees a partial file, and a mismatched pair (possible only when the
// switch falls between its two reads) is caught by the same check gRPC
// makes.
func TestWriteSwitchesTogether(t *testing.T) {
	dir := t.TempDir()
	root := newRoot(t)
	versions := make([]Material, 8)
	for i := range versions {
		versions[i] = issue(t, root, "shop", "greeter")
	}
	if err := Write(dir, versions[0]); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var resolvedReads, mismatchedResolved, namedReads, mismatchedNamed, partial atomic.Int64
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Go(func() {
			for !stop.Load() {
				m, err := Read(dir)
				if errors.Is(err, fs.ErrNotExist) {
					continue // that version is gone; a reader resolves again
				}
				if err != nil {
					t.Error(err)
					return
				}
				resolvedReads.Add(1)
				if _, err := tls.X509KeyPair(m.Chain, m.Key); err != nil {
					mismatchedResolved.Add(1)
				}
			}
		})
		wg.Go(func() {
			for !stop.Load() {
				chain, err1 := os.ReadFile(filepath.Join(dir, CertFile))
				key, err2 := os.ReadFile(filepath.Join(dir, KeyFile))
				if errors.Is(err1, fs.ErrNotExist) || errors.Is(err2, fs.ErrNotExist) {
					continue
				}
				if err1 != nil || err2 != nil {
					t.Error(err1, err2)
					return
				}
				namedReads.Add(1)
				if _, err := certs.ParseCertificatesPEM(chain); err != nil {
					partial.Add(1)
				}
				if _, err := tls.X509KeyPair(chain, key); err != nil {
					mismatchedNamed.Add(1)
				}
			}
		})
	}
	for i := 1; i <= 30; i++ {
		if err := Write(dir, versions[i%len(versions)]); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("resolved reads %d (mismatched %d); by name %d (mismatched %d, caught by the pair check)",
		resolvedReads.Load(), mismatchedResolved.Load(), namedReads.Load(), mismatchedNamed.Load())
	if resolvedReads.Load() == 0 || namedReads.Load() == 0 {
		t.Fatal("the readers never read")
	}
	if mismatchedResolved.Load() != 0 {
		t.Fatalf("%d reads of one resolved version paired a certificate with another version's key", mismatchedResolved.Load())
	}
	if partial.Load() != 0 {
		t.Fatalf("%d reads saw a partial certificate file", partial.Load())
	}
}

func TestWriteFailsWithAClearMessage(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := Write(file, issue(t, newRoot(t), "shop", "greeter"))
	if err == nil || !strings.Contains(err.Error(), "output directory") {
		t.Fatalf("Write into a file = %v, want an error about the output directory", err)
	}
}
