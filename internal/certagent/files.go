package certagent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The files the agent keeps in its output directory, named as Istio's
// agent names them for proxyless gRPC. gRPC's file_watcher certificate
// provider reads them (see Bootstrap).
const (
	CertFile = "cert-chain.pem" // the chain, leaf first
	KeyFile  = "key.pem"        // the leaf's private key, mode 0600
	RootFile = "root-cert.pem"  // the trust bundle
)

// dataLink is the symlink whose target is the directory holding the
// current files; each file name is a symlink through it. Swapping it with
// one rename switches all three files at once (the layout of Kubernetes'
// projected volumes, which readers such as gRPC already cope with).
const dataLink = "..data"

// versionPrefix names the directories that hold one version of the files.
const versionPrefix = "..v-"

// Write installs m in dir so that the certificate, key and bundle change
// together:
//
//	dir/cert-chain.pem -> ..data/cert-chain.pem
//	dir/key.pem        -> ..data/key.pem
//	dir/root-cert.pem  -> ..data/root-cert.pem
//	dir/..data         -> ..v-123456   (replaced by one rename)
//
// The new files are written and synced in a fresh directory first, so a
// reader never sees a partial file, a missing file, or — when it opens the
// files while one version is current — a certificate with another
// version's key. (A reader that opens the certificate just before the swap
// and the key just after can still pair them wrongly; gRPC's file_watcher
// checks the pair, keeps its previous one and re-reads at its next refresh.)
// The version before the previous one is removed afterwards.
func Write(dir string, m Material) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the output directory: %w", err)
	}
	prev, _ := os.Readlink(filepath.Join(dir, dataLink))
	vdir, err := os.MkdirTemp(dir, versionPrefix)
	if err != nil {
		return fmt.Errorf("creating a directory for the new files in %s: %w", dir, err)
	}
	// Readable by the application even when it runs as another user in
	// the same group; the key file itself stays 0600.
	if err := os.Chmod(vdir, 0o755); err != nil {
		_ = os.RemoveAll(vdir)
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode fs.FileMode
	}{
		{CertFile, m.Chain, 0o644},
		{KeyFile, m.Key, 0o600},
		{RootFile, m.Bundle, 0o644},
	} {
		if err := writeSynced(filepath.Join(vdir, f.name), f.data, f.mode); err != nil {
			_ = os.RemoveAll(vdir)
			return err
		}
	}
	if err := syncDir(vdir); err != nil {
		_ = os.RemoveAll(vdir)
		return err
	}
	// The switch: a new symlink, renamed over the old one.
	if err := replaceSymlink(filepath.Base(vdir), filepath.Join(dir, dataLink)); err != nil {
		_ = os.RemoveAll(vdir)
		return err
	}
	for _, name := range []string{CertFile, KeyFile, RootFile} {
		target := filepath.Join(dataLink, name)
		if cur, err := os.Readlink(filepath.Join(dir, name)); err == nil && cur == target {
			continue
		}
		if err := replaceSymlink(target, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	// Versions older than the previous one (left by earlier writes or a
	// crash). The previous one stays until the next write, so a reader that
	// resolved ..data just before the switch still finds its files.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), versionPrefix) && e.Name() != filepath.Base(vdir) && e.Name() != prev {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// Read returns the material currently installed in dir, resolving the
// version once so that the three files belong together.
func Read(dir string) (Material, error) {
	v, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil {
		return Material{}, err
	}
	var m Material
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{{CertFile, &m.Chain}, {KeyFile, &m.Key}, {RootFile, &m.Bundle}} {
		if *f.dst, err = os.ReadFile(filepath.Join(dir, v, f.name)); err != nil {
			return Material{}, err
		}
	}
	return m, nil
}

func writeSynced(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// replaceSymlink points link at target atomically: a temporary symlink
// renamed over link (rename replaces a file or symlink, never a directory).
func replaceSymlink(target, link string) error {
	tmp := link + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("linking %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		_ = os.Remove(tmp)
		var perr *os.LinkError
		if errors.As(err, &perr) {
			if fi, serr := os.Lstat(link); serr == nil && fi.IsDir() {
				return fmt.Errorf("%s is a directory: remove it, the agent keeps a symlink there", link)
			}
		}
		return fmt.Errorf("switching %s: %w", link, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
