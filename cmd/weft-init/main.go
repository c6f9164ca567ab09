// Command weft-init redirects a pod's TCP traffic to its weft sidecar. It runs
// as the first init container of a meshed pod, with only the NET_ADMIN and
// NET_RAW capabilities, and exits once the rules are in place. This file only
// maps flags to capture.Options and applies capture's rules with one of two
// backends: nftables over netlink (nftables_linux.go; the default, and all
// the scratch image can do) or iptables-restore and ip6tables-restore
// (for nodes without nf_tables). loopback.go adds ::6 to lo.
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/capture"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/version"
)

// exitUsage is the exit code for a bad command line, as Go's flag package uses.
const exitUsage = 2

func main() {
	code, err := run(os.Args[1:], os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "weft-init: %v\n", err)
	}
	os.Exit(code)
}

func run(args []string, stdout io.Writer) (int, error) {
	o := capture.Defaults()
	var (
		inPorts, outPorts, outCIDRs string
		dryRun                      bool
		backend                     = "nftables"
		restore                     = "iptables-restore"
		restore6                    = "ip6tables-restore"
		usageErr                    bool
	)
	cmd := &cobra.Command{
		Use:   "weft-init",
		Short: "Redirect the pod's TCP traffic to the weft sidecar (nat rules, nftables or iptables)",
		Long: `weft-init programs the pod's network namespace so that inbound TCP goes to
the sidecar's port 15006 and outbound TCP to 15001, except the sidecar's own
traffic (its user id), loopback, and the excluded ports and ranges, over
IPv4 and, where the namespace has it, IPv6.

With --backend=nftables (the default) it talks netlink to the kernel and
needs no program: it replaces its own tables "ip weft" and "ip6 weft" and
touches nothing else. With --backend=iptables it runs iptables-restore and
ip6tables-restore, which replace the namespace's whole nat table. Either
way each family is applied atomically, and running weft-init again leaves
the same rules.`,
		Args:          cobra.NoArgs,
		Version:       version.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.ExcludeInboundPorts, err = capture.ParsePorts(inPorts); err != nil {
				usageErr = true
				return fmt.Errorf("--exclude-inbound-ports: %w", err)
			}
			if o.ExcludeOutboundPorts, err = capture.ParsePorts(outPorts); err != nil {
				usageErr = true
				return fmt.Errorf("--exclude-outbound-ports: %w", err)
			}
			if o.ExcludeOutboundCIDRs, err = capture.ParseCIDRs(outCIDRs); err != nil {
				usageErr = true
				return fmt.Errorf("--exclude-outbound-ip-ranges: %w", err)
			}
			if backend != "nftables" && backend != "iptables" {
				usageErr = true
				return fmt.Errorf("--backend: %q is not a backend: use nftables (the default) or iptables (iptables-restore, for nodes without nf_tables)", backend)
			}
			v4, err := capture.Plan(o, false)
			if err != nil {
				usageErr = true
				return err
			}
			v6, err := capture.Plan(o, true)
			if err != nil {
				usageErr = true
				return err
			}
			if dryRun {
				// The iptables form of the rules either backend installs.
				_, err := io.WriteString(stdout, "# iptables-restore\n"+v4.IPTablesRestore()+"# ip6tables-restore\n"+v6.IPTablesRestore())
				return err
			}
			tables := []*capture.Table{v4}
			families := "IPv4"
			switch on, why := ipv6Enabled(); {
			case on:
				// IPv6 can carry traffic here: capture it, or fail. A pod
				// whose IPv6 bypassed the sidecar would bypass Strict mTLS
				// and AuthPolicy; an init container that fails keeps the
				// pod from starting, and says why.
				if err := addLoopbackAddress(dataplane.InboundPassthroughSourceV6); err != nil {
					return fmt.Errorf("IPv6 is enabled in this pod, but the sidecar's IPv6 passthrough source %s cannot be added to lo: %w", dataplane.InboundPassthroughSourceV6, err)
				}
				tables = append(tables, v6)
				families = "IPv4 and IPv6"
			default:
				fmt.Fprintf(stdout, "weft-init: no IPv6 rules: %s\n", why)
			}
			if backend == "nftables" {
				// Both families in one batch: all or nothing.
				if err := applyNFTables(tables, -1); err != nil {
					return err
				}
			} else {
				if err := apply(restore, v4.IPTablesRestore()); err != nil {
					return err
				}
				if len(tables) > 1 {
					if err := apply(restore6, v6.IPTablesRestore()); err != nil {
						return fmt.Errorf("IPv6 is enabled in this pod and must be captured too (its traffic would bypass mTLS and AuthPolicy): %w", err)
					}
				}
			}
			fmt.Fprintf(stdout, "weft-init: traffic capture installed for %s with %s (inbound → :%d, outbound → :%d, proxy uid %d)\n", families, backend, o.InboundPort, o.OutboundPort, o.ProxyUID)
			return nil
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		usageErr = true
		return err
	})
	f := cmd.Flags()
	f.Uint32Var(&o.ProxyUID, "proxy-uid", o.ProxyUID, "user id the proxy runs as; its traffic is not captured")
	f.Uint32Var(&o.ProxyGID, "proxy-gid", o.ProxyGID, "group id the proxy runs as; its traffic is not captured (0: no group rule)")
	f.Uint16Var(&o.InboundPort, "inbound-port", o.InboundPort, "proxy port that receives captured inbound traffic")
	f.Uint16Var(&o.OutboundPort, "outbound-port", o.OutboundPort, "proxy port that receives captured outbound traffic")
	f.BoolVar(&o.NoInbound, "no-inbound", false, "capture outbound traffic only")
	f.StringVar(&inPorts, "exclude-inbound-ports", "", "comma-separated pod ports whose inbound traffic bypasses the proxy")
	f.StringVar(&outPorts, "exclude-outbound-ports", "", "comma-separated destination ports that bypass the proxy")
	f.StringVar(&outCIDRs, "exclude-outbound-ip-ranges", "", "comma-separated destination CIDRs that bypass the proxy")
	f.StringVar(&backend, "backend", backend, "how to program the kernel: nftables (netlink, no program needed) or iptables (iptables-restore)")
	f.BoolVar(&dryRun, "dry-run", false, "print the rules (in iptables-restore form) instead of applying them")
	f.StringVar(&restore, "iptables-restore", restore, "with --backend=iptables: the iptables-restore program (e.g. iptables-legacy-restore)")
	f.StringVar(&restore6, "ip6tables-restore", restore6, "with --backend=iptables: the ip6tables-restore program (e.g. ip6tables-legacy-restore), run when the pod's network namespace has IPv6")
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	if err := cmd.Execute(); err != nil {
		if usageErr {
			return exitUsage, err
		}
		return 1, err
	}
	return 0, nil
}

// apply feeds the rules to iptables-restore, which applies the nat table
// atomically: either every rule is in place or none.
func apply(program, rules string) error {
	var stderr bytes.Buffer
	c := exec.Command(program)
	c.Stdin = bytes.NewBufferString(rules)
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s\nthe rules were:\n%s", program, err, bytes.TrimSpace(stderr.Bytes()), rules)
	}
	return nil
}
