package controller

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// reportName names this replica's report Lease after its pod: POD_NAME
// (the downward API sets it in config/controller), else the host name with
// a random suffix, since several processes may share a host.
func reportName() (string, error) {
	name := os.Getenv("POD_NAME")
	if name == "" {
		name = replicaID()
	}
	if name == LeaseName {
		// The leader-election Lease has this name; the report would
		// overwrite it.
		return "", fmt.Errorf("POD_NAME %q is the leader-election Lease's name: the replica's report Lease would replace it; name the pod differently", name)
	}
	return name, nil
}

// replicaID is the host name with a random suffix, so that two processes
// on one host (tests, a restart overlapping its predecessor) never share a
// report.
func replicaID() string {
	h, _ := os.Hostname()
	h = strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(h), "-"), "-.")
	if len(h) > 200 {
		h = h[:200]
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	if h == "" {
		h = "weft"
	}
	return h + "-" + hex.EncodeToString(b)
}

var nonDNS = regexp.MustCompile(`[^a-z0-9.-]+`)
