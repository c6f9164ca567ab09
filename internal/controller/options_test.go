package controller

import (
	"strings"
	"testing"
)

func TestValidateNamesTheFlag(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Options)
		want   string // substring of the error; empty means valid
	}{
		{"defaults", func(*Options) {}, ""},
		{"loopback addresses", func(o *Options) { o.XDSAddress, o.MonitoringAddress = "127.0.0.1:0", "[::1]:9090" }, ""},
		{"xds not host:port", func(o *Options) { o.XDSAddress = "15010" }, `--xds-address "15010" is not host:port`},
		{"xds port out of range", func(o *Options) { o.XDSAddress = ":70000" }, "--xds-address \":70000\": port must be a number"},
		{"monitoring host name", func(o *Options) { o.MonitoringAddress = "example.com:9090" }, "--monitoring-address \"example.com:9090\": host must be an IP address"},
		{"same port twice", func(o *Options) { o.XDSAddress = ":15010"; o.MonitoringAddress = o.XDSAddress }, "give each its own port"},
		{"debug on the xds port", func(o *Options) { o.XDSAddress = ":15010"; o.DebugAddress = o.XDSAddress }, "--debug-address"},
		{"tls xds on the plaintext port", func(o *Options) { o.XDSAddress = ":15012"; o.XDSTLSAddress = o.XDSAddress }, "--xds-tls-address"},
		{"plaintext off", func(o *Options) { o.XDSAddress = "" }, ""},
		{"debug not host:port", func(o *Options) { o.DebugAddress = "localhost" }, `--debug-address "localhost" is not host:port`},
		{"webhook on the monitoring port", func(o *Options) { o.WebhookAddress = o.MonitoringAddress }, "--webhook-address"},
		{"webhook not host:port", func(o *Options) { o.WebhookAddress = "9443" }, `--webhook-address "9443" is not host:port`},
		{"no lease namespace", func(o *Options) { o.LeaderElectionNamespace = "" }, "--leader-election-namespace is empty"},
		{"no lease namespace without election", func(o *Options) { o.LeaderElection, o.LeaderElectionNamespace = false, "" }, ""},
		{"log level", func(o *Options) { o.LogLevel = "verbose" }, `--log-level "verbose" is not a level: use debug, info or error`},
		{"log format", func(o *Options) { o.LogFormat = "xml" }, `--log-format "xml" is not a format`},
		{"xds auth", func(o *Options) { o.XDSAuth = "mtls" }, `--xds-auth "mtls" is not a mode`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOptions()
			tc.change(&o)
			err := o.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Fatalf("Validate() = %q, want one line", err)
			}
		})
	}
}

// TestPlaintextXDSIsOffByDefault: the anonymous plaintext port lets any
// client claim any identity and read its configuration, so it listens only
// when the operator names an address (issue 13, docs/design/070).
func TestPlaintextXDSIsOffByDefault(t *testing.T) {
	if a := DefaultOptions().XDSAddress; a != "" {
		t.Fatalf("the default --xds-address is %q: the anonymous plaintext xDS port listens unless the operator turns it off; want it off (empty)", a)
	}
}
