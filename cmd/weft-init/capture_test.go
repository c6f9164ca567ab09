//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/dataplane"
)

// TestCaptureInNetworkNamespace runs the real weft-init binary with each of
// its backends — nftables over netlink (the default, all the scratch image
// has) and the real iptables-restore and ip6tables-restore — inside a
// network namespace made for the test, then proves with TCP connections
// where traffic goes, over IPv4 and IPv6: both backends must redirect the
// same connections. Two namespaces joined by a veth pair stand for the pod
// (10.99.0.1, fd99::1) and the rest of the network (10.99.0.2 and
// 10.99.0.3, fd99::2 and fd99::3). Every listener answers with its name and the connection's
// original destination (SO_ORIGINAL_DST), so a redirected connection says
// where it was meant to go.
func TestCaptureInNetworkNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces and run iptables (CI runs as root); run `sudo go test ./cmd/weft-init`")
	}
	for _, prog := range []string{"ip", "iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Fatalf("%s is not installed: apt-get install -y iptables iproute2 (.ci/run installs them)", prog)
		}
	}
	bin := filepath.Join(t.TempDir(), "weft-init")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) { testCapture(t, bin, backend) })
	}
}

func testCapture(t *testing.T, bin, backend string) {
	pod := fmt.Sprintf("weft-pod-%d-%s", os.Getpid(), backend[:3])
	peer := fmt.Sprintf("weft-peer-%d-%s", os.Getpid(), backend[:3])
	for _, ns := range []string{pod, peer} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	sh(t, "ip", "-n", pod, "link", "add", "vpod", "type", "veth", "peer", "name", "vpeer", "netns", peer)
	sh(t, "ip", "-n", pod, "addr", "add", "10.99.0.1/24", "dev", "vpod")
	sh(t, "ip", "-n", pod, "link", "set", "vpod", "up")
	sh(t, "ip", "-n", peer, "addr", "add", "10.99.0.2/24", "dev", "vpeer")
	sh(t, "ip", "-n", peer, "addr", "add", "10.99.0.3/24", "dev", "vpeer")
	sh(t, "ip", "-n", peer, "link", "set", "vpeer", "up")
	sh(t, "ip", "-n", pod, "-6", "addr", "add", "fd99::1/64", "dev", "vpod", "nodad")
	sh(t, "ip", "-n", peer, "-6", "addr", "add", "fd99::2/64", "dev", "vpeer", "nodad")
	sh(t, "ip", "-n", peer, "-6", "addr", "add", "fd99::3/64", "dev", "vpeer", "nodad")

	// The pod: the sidecar's capture and readiness ports, and the app.
	for name, port := range map[string]int{"outbound-capture": dataplane.OutboundPort, "inbound-capture": dataplane.InboundPort, "readiness": dataplane.ReadinessPort, "app:8080": 8080, "app:7777": 7777} {
		serve(t, pod, name, port)
	}
	// The rest of the network.
	for name, port := range map[string]int{"peer:80": 80, "peer:5432": 5432} {
		serve(t, peer, name, port)
	}

	// Before weft-init, connections go where they were sent: the
	// redirects below are the rules' doing.
	for dst, want := range map[string]string{"10.99.0.2:80": "peer:80", "10.99.0.1:8080": "app:8080", "[fd99::2]:80": "peer:80", "[fd99::1]:8080": "app:8080"} {
		if got, err := dial(pod, 0, "", dst); err != nil || got != want {
			t.Fatalf("before capture, %s reached %q (%v), want %q", dst, got, err, want)
		}
	}

	args := []string{"--exclude-inbound-ports=7777", "--exclude-outbound-ports=5432", "--exclude-outbound-ip-ranges=10.99.0.3/32,fd99::3/128"}
	if backend != "nftables" {
		args = append(args, "--backend="+backend)
	}
	out := sh(t, "ip", append([]string{"netns", "exec", pod, bin}, args...)...)
	if !strings.Contains(out, "traffic capture installed for IPv4 and IPv6 with "+backend) {
		t.Errorf("weft-init output: %q", out)
	}
	if lo := sh(t, "ip", "-n", pod, "-6", "addr", "show", "dev", "lo"); !strings.Contains(lo, dataplane.InboundPassthroughSourceV6+"/128") {
		t.Errorf("weft-init did not add %s to lo:\n%s", dataplane.InboundPassthroughSourceV6, lo)
	}
	installed := func() string {
		if backend == "nftables" {
			return nftRules(t, pod)
		}
		return stripComments(sh(t, "ip", "netns", "exec", pod, "iptables-save", "-t", "nat")) +
			stripComments(sh(t, "ip", "netns", "exec", pod, "ip6tables-save", "-t", "nat"))
	}
	first := installed()

	const app, proxy = 0, dataplane.ProxyUID
	cases := []struct {
		name     string
		ns       string
		uid      int
		src, dst string
		want     string
	}{
		{"app outbound is captured", pod, app, "", "10.99.0.2:80", "outbound-capture orig=10.99.0.2:80"},
		{"excluded outbound port bypasses", pod, app, "", "10.99.0.2:5432", "peer:5432"},
		{"excluded outbound range bypasses", pod, app, "", "10.99.0.3:80", "peer:80"},
		{"proxy uid bypasses", pod, proxy, "", "10.99.0.2:80", "peer:80"},
		{"app loopback bypasses", pod, app, "", "127.0.0.1:8080", "app:8080"},
		{"inbound is captured", peer, app, "", "10.99.0.1:8080", "inbound-capture orig=10.99.0.1:8080"},
		{"excluded inbound port bypasses", peer, app, "", "10.99.0.1:7777", "app:7777"},
		{"readiness port is not captured", peer, app, "", "10.99.0.1:15021", "readiness"},
		{"inbound passthrough from 127.0.0.6 reaches the app", pod, proxy, dataplane.InboundPassthroughSource, "10.99.0.1:8080", "app:8080"},
		{"proxy calling its own pod IP goes inbound", pod, proxy, "", "10.99.0.1:8080", "inbound-capture orig=10.99.0.1:8080"},
		{"proxy calling its own pod IP on an excluded inbound port reaches the app", pod, proxy, "", "10.99.0.1:7777", "app:7777"},
		// The same over IPv6, with ::6 as the passthrough source and ::1
		// as loopback.
		{"IPv6: app outbound is captured", pod, app, "", "[fd99::2]:80", "outbound-capture orig=[fd99::2]:80"},
		{"IPv6: excluded outbound port bypasses", pod, app, "", "[fd99::2]:5432", "peer:5432"},
		{"IPv6: excluded outbound range bypasses", pod, app, "", "[fd99::3]:80", "peer:80"},
		{"IPv6: proxy uid bypasses", pod, proxy, "", "[fd99::2]:80", "peer:80"},
		{"IPv6: app loopback bypasses", pod, app, "", "[::1]:8080", "app:8080"},
		{"IPv6: inbound is captured", peer, app, "", "[fd99::1]:8080", "inbound-capture orig=[fd99::1]:8080"},
		{"IPv6: excluded inbound port bypasses", peer, app, "", "[fd99::1]:7777", "app:7777"},
		{"IPv6: readiness port is not captured", peer, app, "", "[fd99::1]:15021", "readiness"},
		{"IPv6: inbound passthrough from ::6 reaches the app", pod, proxy, dataplane.InboundPassthroughSourceV6, "[fd99::1]:8080", "app:8080"},
		{"IPv6: proxy calling its own pod IP goes inbound", pod, proxy, "", "[fd99::1]:8080", "inbound-capture orig=[fd99::1]:8080"},
		{"IPv6: proxy calling its own pod IP on an excluded inbound port reaches the app", pod, proxy, "", "[fd99::1]:7777", "app:7777"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := dial(c.ns, c.uid, c.src, c.dst)
			if err != nil {
				t.Fatalf("dial %s from %s (uid %d): %v", c.dst, c.ns, c.uid, err)
			}
			if got != c.want {
				t.Errorf("dial %s from %s (uid %d) reached %q, want %q", c.dst, c.ns, c.uid, got, c.want)
			}
		})
	}

	// An init container may run again (pod sandbox restart): same rules.
	sh(t, "ip", append([]string{"netns", "exec", pod, bin}, args...)...)
	if again := installed(); again != first {
		t.Errorf("running weft-init twice changed the rules:\nfirst:\n%s\nsecond:\n%s", first, again)
	}
	if got, err := dial(pod, app, "", "10.99.0.2:80"); err != nil || got != "outbound-capture orig=10.99.0.2:80" {
		t.Errorf("after a second run, outbound reached %q (%v)", got, err)
	}
}

// TestNoIPv6Namespace: in a network namespace with IPv6 disabled there is
// no IPv6 traffic to capture; weft-init says so and installs IPv4 only.
func TestNoIPv6Namespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces and run iptables (CI runs as root); run `sudo go test ./cmd/weft-init`")
	}
	bin := filepath.Join(t.TempDir(), "weft-init")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ns := fmt.Sprintf("weft-nov6-%d", os.Getpid())
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	sh(t, "ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
	out := sh(t, "ip", "netns", "exec", ns, bin)
	if !strings.Contains(out, "no IPv6 rules: IPv6 is disabled") || !strings.Contains(out, "installed for IPv4 with nftables (") {
		t.Errorf("weft-init output: %q", out)
	}
}

func TestBadFlags(t *testing.T) {
	for args, want := range map[string]string{
		"--exclude-outbound-ports=http":                `--exclude-outbound-ports: "http" is not a port`,
		"--exclude-outbound-ip-ranges=foo":             `--exclude-outbound-ip-ranges: "foo" is not an IP range`,
		"--exclude-inbound-ports=70000":                `--exclude-inbound-ports: "70000" is not a port`,
		"--proxy-uid=0":                                "the proxy uid must not be 0",
		"--no-such-flag":                               "unknown flag: --no-such-flag",
		"--exclude-outbound-ip-ranges=::ffff:10.0.0.1": "IPv4-mapped",
	} {
		code, err := run([]string{args}, &bytes.Buffer{})
		if code != exitUsage || err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: exit %d, %v; want exit %d and %q", args, code, err, exitUsage, want)
		}
	}
}

func TestDryRun(t *testing.T) {
	var out bytes.Buffer
	if code, err := run([]string{"--dry-run", "--exclude-outbound-ports=5432"}, &out); code != 0 || err != nil {
		t.Fatalf("exit %d: %v", code, err)
	}
	if !strings.Contains(out.String(), "-A WEFT_OUTBOUND -p tcp --dport 5432 -j RETURN\n") || !strings.HasSuffix(out.String(), "COMMIT\n") ||
		!strings.Contains(out.String(), "# ip6tables-restore\n") || !strings.Contains(out.String(), "-A WEFT_OUTBOUND -s ::6/128 -o lo -j RETURN\n") {
		t.Errorf("dry run printed:\n%s", out.String())
	}
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func stripComments(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// inNetns runs f on an OS thread that has joined the named network
// namespace. Sockets keep the namespace they were created in.
func inNetns(name string, f func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := setns(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", name, err)
	}
	ferr := f()
	if err := setns(orig); err != nil {
		// Leave the thread locked: it dies with the goroutine instead of
		// serving others in the wrong namespace.
		return fmt.Errorf("returning from %s: %w", name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// serve answers every connection on port in namespace ns with its name and,
// for redirected connections, the original destination.
func serve(t *testing.T, ns, name string, port int) {
	t.Helper()
	for _, network := range []string{"tcp4", "tcp6"} { // tcp6 listens IPV6_V6ONLY
		serveOn(t, ns, name, network, port)
	}
}

func serveOn(t *testing.T, ns, name, network string, port int) {
	t.Helper()
	var l net.Listener
	if err := inNetns(ns, func() (err error) {
		l, err = net.Listen(network, fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s (%s): %v", name, ns, network, err)
	}
	t.Cleanup(func() { l.Close() })
	redirected := strings.HasSuffix(name, "-capture")
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			msg := name
			if redirected {
				msg += " orig=" + originalDst(c)
			}
			fmt.Fprintln(c, msg)
			c.Close()
		}
	}()
}

func originalDst(c net.Conn) string {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err.Error()
	}
	var addr string
	if c.LocalAddr().(*net.TCPAddr).IP.To4() == nil {
		_ = raw.Control(func(fd uintptr) {
			// IP6T_SO_ORIGINAL_DST returns a sockaddr_in6; IPv6MTUInfo
			// starts with one.
			m, err := unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSoOriginalDst)
			if err != nil {
				addr = err.Error()
				return
			}
			p := (*[2]byte)(unsafe.Pointer(&m.Addr.Port))
			addr = net.JoinHostPort(net.IP(m.Addr.Addr[:]).String(), fmt.Sprint(int(p[0])<<8|int(p[1])))
		})
		return addr
	}
	_ = raw.Control(func(fd uintptr) {
		// SO_ORIGINAL_DST returns a sockaddr_in; IPv6Mreq is the 20-byte
		// buffer the standard trick reads it into.
		m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			addr = err.Error()
			return
		}
		b := m.Multiaddr
		addr = fmt.Sprintf("%d.%d.%d.%d:%d", b[4], b[5], b[6], b[7], int(b[2])<<8|int(b[3]))
	})
	return addr
}

// dial connects from namespace ns as file-system uid uid (the owner iptables
// matches on), optionally from source address src, and returns the line the
// listener answered with.
func dial(ns string, uid int, src, dst string) (string, error) {
	var conn net.Conn
	err := inNetns(ns, func() error {
		if uid != 0 {
			setfsuid(uid)
			defer setfsuid(0)
		}
		d := net.Dialer{Timeout: 3 * time.Second}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		var err error
		conn, err = d.Dial("tcp", dst)
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil && !isEOF(err) {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

func isEOF(err error) bool { return err != nil && (err.Error() == "EOF" || err == syscall.ECONNRESET) }

// setns moves the calling thread into the network namespace of f.
func setns(f *os.File) error { return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET) }

// setfsuid sets the calling thread's file-system uid, which new sockets
// take as their owner (what iptables' owner match sees). Unlike setuid, it
// affects only this thread.
func setfsuid(uid int) { _ = unix.Setfsuid(uid) }

// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h:
// 80, the same number as SO_ORIGINAL_DST, at level SOL_IPV6).
const ip6tSoOriginalDst = 80
