// Command weft-init redirects a pod's TCP traffic to its weft sidecar. It runs
// as the first init container of a meshed pod, with only the NET_ADMIN and
// NET_RAW capabilities, and exits once the rules are in place. This file only
// maps flags to capture.Options and runs iptables-restore and
// ip6tables-restore (loopback.go adds ::6 to lo).
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
		restore                     = "iptables-restore"
		restore6                    = "ip6tables-restore"
		usageErr                    bool
	)
	cmd := &cobra.Command{
		Use:   "weft-init",
		Short: "Redirect the pod's TCP traffic to the weft sidecar (iptables nat rules)",
		Long: `weft-init writes the nat table of the pod's network namespace: inbound TCP
goes to the sidecar's port 15006, outbound TCP to 15001, except the sidecar's
own traffic (its user id), loopback, and the excluded ports and ranges. It
replaces the whole nat table of the namespace, so running it again is safe.`,
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
			rules, err := capture.Rules(o)
			if err != nil {
				usageErr = true
				return err
			}
			rules6, err := capture.RulesV6(o)
			if err != nil {
				usageErr = true
				return err
			}
			if dryRun {
				_, err := io.WriteString(stdout, "# iptables-restore\n"+rules+"# ip6tables-restore\n"+rules6)
				return err
			}
			if err := apply(restore, rules); err != nil {
				return err
			}
			families := "IPv4"
			switch v6, why := ipv6Enabled(); {
			case v6:
				// IPv6 can carry traffic here: capture it, or fail. A pod
				// whose IPv6 bypassed the sidecar would bypass Strict mTLS
				// and AuthPolicy; an init container that fails keeps the
				// pod from starting, and says why.
				if err := addLoopbackAddress(dataplane.InboundPassthroughSourceV6); err != nil {
					return fmt.Errorf("IPv6 is enabled in this pod, but the sidecar's IPv6 passthrough source %s cannot be added to lo: %w", dataplane.InboundPassthroughSourceV6, err)
				}
				if err := apply(restore6, rules6); err != nil {
					return fmt.Errorf("IPv6 is enabled in this pod and must be captured too (its traffic would bypass mTLS and AuthPolicy): %w", err)
				}
				families = "IPv4 and IPv6"
			default:
				fmt.Fprintf(stdout, "weft-init: no IPv6 rules: %s\n", why)
			}
			fmt.Fprintf(stdout, "weft-init: traffic capture installed for %s (inbound → :%d, outbound → :%d, proxy uid %d)\n", families, o.InboundPort, o.OutboundPort, o.ProxyUID)
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
	f.BoolVar(&dryRun, "dry-run", false, "print the iptables-restore input instead of applying it")
	f.StringVar(&restore, "iptables-restore", restore, "iptables-restore program (e.g. iptables-legacy-restore on nodes without nftables)")
	f.StringVar(&restore6, "ip6tables-restore", restore6, "ip6tables-restore program (e.g. ip6tables-legacy-restore), run when the pod's network namespace has IPv6")
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
