//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// disableIPv6 is the sysctl that says whether the network namespace
// carries IPv6 (per namespace: /proc/sys/net is the caller's namespace's).
const disableIPv6 = "/proc/sys/net/ipv6/conf/all/disable_ipv6"

// ipv6Enabled says whether the pod's network namespace can carry IPv6, and
// if not, why. Without the sysctl the kernel has no IPv6 at all; with it
// set to 1 no interface has an IPv6 address. Either way there is no IPv6
// traffic to capture.
func ipv6Enabled() (bool, string) {
	b, err := os.ReadFile(disableIPv6)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, "the kernel has no IPv6 (" + disableIPv6 + " does not exist)"
	case err != nil:
		// Unknown: capture, and let ip6tables-restore say what is wrong.
		return true, ""
	case strings.TrimSpace(string(b)) == "1":
		return false, "IPv6 is disabled in this pod's network namespace (" + disableIPv6 + " is 1)"
	}
	return true, ""
}

// addLoopbackAddress adds addr/128 to lo, as `ip -6 addr add ::6/128 dev
// lo nodad` would, over rtnetlink (the weft-init image has no ip binary).
// Adding an address lo already has is not an error, so weft-init may run
// again.
func addLoopbackAddress(s string) error {
	addr, err := netip.ParseAddr(s)
	if err != nil || !addr.Is6() {
		return fmt.Errorf("%q is not an IPv6 address", s)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	// nlmsghdr, ifaddrmsg, then IFA_LOCAL and IFA_ADDRESS attributes.
	a16 := addr.As16()
	attr := func(typ uint16) []byte {
		b := make([]byte, unix.SizeofRtAttr+16)
		binary.NativeEndian.PutUint16(b[0:], uint16(len(b)))
		binary.NativeEndian.PutUint16(b[2:], typ)
		copy(b[unix.SizeofRtAttr:], a16[:])
		return b
	}
	body := make([]byte, unix.SizeofIfAddrmsg)
	body[0] = unix.AF_INET6
	body[1] = 128
	body[2] = unix.IFA_F_NODAD
	body[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(body[4:], uint32(lo.Index))
	body = append(append(body, attr(unix.IFA_LOCAL)...), attr(unix.IFA_ADDRESS)...)
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], unix.RTM_NEWADDR)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	binary.NativeEndian.PutUint32(msg[8:], 1) // sequence number
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("netlink receive: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return fmt.Errorf("netlink answer: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
			continue
		}
		switch errno := -int32(binary.NativeEndian.Uint32(m.Data[:4])); errno {
		case 0, int32(unix.EEXIST):
			return nil
		default:
			return fmt.Errorf("add %s/128 to lo: %w", addr, unix.Errno(errno))
		}
	}
	return errors.New("add address: no answer from the kernel")
}
