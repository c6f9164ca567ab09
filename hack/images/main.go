// Command images builds weft's container images from Go alone, without a
// Docker daemon: weft-controller, weft (the CLI and `weft agent`) and
// weft-init, each one static binary on an otherwise empty file system (a
// passwd and group file naming root and nonroot, /tmp). They are written as
// docker-archive tarballs under bin/images/, which `docker load -i`,
// `kind load image-archive` and `crane push` accept.
//
// The same commit gives the same digests: binaries are built with -trimpath
// and an empty build id, every file in the layer has the same owner, mode
// and time (SOURCE_DATE_EPOCH, by default the commit's time), and the
// image's created time is that time too (docs/design/086).
//
// Run it with `make images` (from the repository root):
//
//	go -C hack/images run . -repo ../.. -out ../../bin/images -version v0.1.0 -revision $(git rev-parse HEAD)
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// NonRootUID is the user weft-controller and weft agent run as: distroless'
// "nonroot" (65532), a uid no distribution gives a real account.
const NonRootUID = 65532

// Source is the repository named in each image's
// org.opencontainers.image.source label.
const Source = "https://github.com/weftmesh/weft"

// Image is one image: which main package, and as whom it runs.
type Image struct {
	// Name is the image's name in the registry and the binary's name.
	Name string
	// Package is the main package, relative to the repository.
	Package string
	// UID is the user the entrypoint runs as. weft-init runs as root (0):
	// it programs the pod's netfilter tables with NET_ADMIN, as the
	// webhook's init container spec says (runAsUser 0, capabilities
	// NET_ADMIN and NET_RAW, everything else dropped).
	UID int
	// Description is the org.opencontainers.image.description label.
	Description string
}

// Images are the images `make images` builds.
var Images = []Image{
	{Name: "weft-controller", Package: "./cmd/weft-controller", UID: NonRootUID, Description: "weft's control plane: Kubernetes and weft policies in, Envoy xDS out"},
	{Name: "weft", Package: "./cmd/weft", UID: NonRootUID, Description: "weft's CLI and `weft agent`, the certificate agent of proxyless gRPC pods"},
	{Name: "weft-init", Package: "./cmd/weft-init", UID: 0, Description: "weft's init container: redirects a meshed pod's TCP traffic to its sidecar"},
}

// Options say what to build and how.
type Options struct {
	// Repo is the root of weft's repository.
	Repo string
	// Out is the folder the tarballs are written to.
	Out string
	// Registry prefixes each image's name (ghcr.io/weftmesh).
	Registry string
	// Version tags the images and is linked into the binaries.
	Version string
	// Revision is the commit, linked into the binaries and labelled.
	Revision string
	// Created is every file's time and the image's created time.
	Created time.Time
	// Arch is the GOARCH of the binaries and the image's architecture.
	Arch string
	// Only, when not empty, builds only these images.
	Only []string
}

// Result is one built image.
type Result struct {
	Ref    string
	File   string
	Digest v1.Hash
	// Size is the tarball's size in bytes (config and compressed layer).
	Size int64
}

func main() {
	var o Options
	var epoch, only string
	flag.StringVar(&o.Repo, "repo", ".", "the root of weft's repository")
	flag.StringVar(&o.Out, "out", "bin/images", "folder for the image tarballs")
	flag.StringVar(&o.Registry, "registry", "ghcr.io/weftmesh", "registry and path the image names start with")
	flag.StringVar(&o.Version, "version", "dev", "image tag and the binaries' version (make passes git describe)")
	flag.StringVar(&o.Revision, "revision", "unknown", "source commit (make passes git rev-parse HEAD)")
	flag.StringVar(&epoch, "source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "seconds since 1970 for every file's and the image's time (make passes the commit's time)")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "GOARCH of the binaries")
	flag.StringVar(&only, "only", "", "comma-separated image names to build (default: all)")
	flag.Parse()
	secs, err := strconv.ParseInt(strings.TrimSpace(epoch), 10, 64)
	if epoch == "" {
		secs, err = 0, nil
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "images: -source-date-epoch %q is not a number of seconds\n", epoch)
		os.Exit(2)
	}
	o.Created = time.Unix(secs, 0).UTC()
	if only != "" {
		o.Only = strings.Split(only, ",")
	}
	results, err := Build(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "images: %v\n", err)
		os.Exit(1)
	}
	for _, r := range results {
		fmt.Printf("%-50s %s %6.1f MiB %s\n", r.Ref, r.Digest, float64(r.Size)/(1<<20), r.File)
	}
}

// Build builds the images and writes one tarball per image into o.Out.
func Build(o Options) ([]Result, error) {
	repo, err := filepath.Abs(o.Repo)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "weft-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	var results []Result
	for _, im := range Images {
		if len(o.Only) > 0 && !contains(o.Only, im.Name) {
			continue
		}
		bin := filepath.Join(work, im.Name)
		if err := goBuild(repo, im.Package, bin, o); err != nil {
			return nil, fmt.Errorf("%s: %w", im.Name, err)
		}
		img, err := Assemble(im, bin, o)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", im.Name, err)
		}
		ref, err := name.NewTag(o.Registry + "/" + im.Name + ":" + o.Version)
		if err != nil {
			return nil, fmt.Errorf("%s: the image name: %w (is -version a valid tag?)", im.Name, err)
		}
		file := filepath.Join(o.Out, im.Name+".tar")
		if err := tarball.WriteToFile(file, ref, img); err != nil {
			return nil, fmt.Errorf("%s: %w", im.Name, err)
		}
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(file)
		if err != nil {
			return nil, err
		}
		results = append(results, Result{Ref: ref.String(), File: file, Digest: d, Size: st.Size()})
	}
	return results, nil
}

// goBuild builds a static binary for linux: no cgo, no paths of this
// machine (-trimpath), no build id, stripped, with the version linked in.
func goBuild(repo, pkg, out string, o Options) error {
	ldflags := strings.Join([]string{
		"-s", "-w", "-buildid=",
		"-X github.com/weftmesh/weft/internal/version.Version=" + o.Version,
		"-X github.com/weftmesh/weft/internal/version.Revision=" + o.Revision,
	}, " ")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.Arch, "GOFLAGS=")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}

// Assemble makes the image of one binary: a single layer and a config
// whose every time is o.Created.
func Assemble(im Image, binary string, o Options) (v1.Image, error) {
	layerTar, err := rootfs(im, binary, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.DockerLayer))
	if err != nil {
		return nil, err
	}
	user := fmt.Sprintf("%d:%d", im.UID, im.UID)
	entry := "/usr/local/bin/" + im.Name
	cfg := &v1.ConfigFile{
		Architecture: o.Arch,
		OS:           "linux",
		Created:      v1.Time{Time: o.Created},
		Config: v1.Config{
			User:       user,
			Entrypoint: []string{entry},
			WorkingDir: "/",
			Env:        []string{"PATH=/usr/local/bin"},
			Labels: map[string]string{
				"org.opencontainers.image.title":       im.Name,
				"org.opencontainers.image.description": im.Description,
				"org.opencontainers.image.version":     o.Version,
				"org.opencontainers.image.revision":    o.Revision,
				"org.opencontainers.image.source":      Source,
				"org.opencontainers.image.created":     o.Created.Format(time.RFC3339),
				"org.opencontainers.image.licenses":    "Apache-2.0",
			},
		},
	}
	// Docker's schema 2 media types, which a docker-archive tarball
	// records: the image read back by docker load, kind or crane push has
	// the digest printed here (with OCI media types it would not, since the
	// archive's manifest.json does not keep them).
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, err
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: o.Created}, CreatedBy: "hack/images: " + im.Package, Comment: "static binary, CGO_ENABLED=0"},
	})
	if err != nil {
		return nil, err
	}
	return mutate.CreatedAt(img, v1.Time{Time: o.Created})
}

// rootfs is the layer: the binary in /usr/local/bin, the users in /etc, an
// empty /tmp and nonroot's home; every entry owned, moded and timed the
// same way on every build.
func rootfs(im Image, binary string, created time.Time) ([]byte, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: uid, ModTime: created, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: created, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", NonRootUID, NonRootUID)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", NonRootUID)
	steps := []func() error{
		func() error { return dir("etc/", 0o755, 0) },
		func() error { return file("etc/group", 0o644, []byte(group)) },
		func() error { return file("etc/passwd", 0o644, []byte(passwd)) },
		func() error { return dir("home/", 0o755, 0) },
		func() error { return dir("home/nonroot/", 0o700, NonRootUID) },
		func() error { return dir("root/", 0o700, 0) },
		func() error { return dir("tmp/", 0o1777, 0) },
		func() error { return dir("usr/", 0o755, 0) },
		func() error { return dir("usr/local/", 0o755, 0) },
		func() error { return dir("usr/local/bin/", 0o755, 0) },
		func() error { return file("usr/local/bin/"+im.Name, 0o755, bin) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
