package main

import (
	"archive/tar"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestReproducible builds weft-init's image twice, from two builds of the
// binary in two different folders, and wants the same digest; it then reads
// the written tarball back as docker load would and checks what a runtime
// reads: the user, the entrypoint, the labels, and the files.
func TestReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds weft-init twice")
	}
	o := Options{
		Repo:     "../..",
		Registry: "ghcr.io/weftmesh",
		Version:  "v0.0.0-test",
		Revision: "0123456789abcdef0123456789abcdef01234567",
		Created:  time.Unix(1764633600, 0).UTC(),
		Arch:     "amd64",
		Only:     []string{"weft-init"},
	}
	var digests []string
	var file string
	for range 2 {
		o.Out = t.TempDir()
		rs, err := Build(o)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 1 {
			t.Fatalf("built %d images, want 1", len(rs))
		}
		digests = append(digests, rs[0].Digest.String())
		file = rs[0].File
	}
	if digests[0] != digests[1] {
		t.Fatalf("two builds of the same source gave %s and %s", digests[0], digests[1])
	}

	img, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d.String() != digests[0] {
		t.Errorf("the tarball's image is %s, Build said %s", d, digests[0])
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "0:0" || cf.Config.Entrypoint[0] != "/usr/local/bin/weft-init" || cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("config: user %q entrypoint %q %s/%s", cf.Config.User, cf.Config.Entrypoint, cf.OS, cf.Architecture)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.version":  o.Version,
		"org.opencontainers.image.revision": o.Revision,
		"org.opencontainers.image.source":   Source,
	} {
		if got := cf.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
	if !cf.Created.Time.Equal(o.Created) {
		t.Errorf("created %v, want %v", cf.Created, o.Created)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers (%v), want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[filepath.Clean(h.Name)] = true
		if !h.ModTime.Equal(o.Created) {
			t.Errorf("%s: time %v, want %v", h.Name, h.ModTime, o.Created)
		}
		if h.Name == "usr/local/bin/weft-init" {
			head := make([]byte, 4)
			if _, err := io.ReadFull(tr, head); err != nil || string(head) != "\x7fELF" {
				t.Errorf("the binary does not start with ELF: %q %v", head, err)
			}
		}
	}
	for _, f := range []string{"usr/local/bin/weft-init", "etc/passwd", "etc/group", "tmp"} {
		if !seen[f] {
			t.Errorf("the layer lacks %s", f)
		}
	}
}

// TestNonRoot checks who each image runs as: weft-controller and weft as
// nonroot (65532), weft-init as root, as its init container spec says.
func TestNonRoot(t *testing.T) {
	want := map[string]int{"weft-controller": NonRootUID, "weft": NonRootUID, "weft-init": 0}
	for _, im := range Images {
		if im.UID != want[im.Name] {
			t.Errorf("%s runs as %d, want %d", im.Name, im.UID, want[im.Name])
		}
		delete(want, im.Name)
	}
	if len(want) != 0 {
		t.Errorf("no image for %v", want)
	}
}
