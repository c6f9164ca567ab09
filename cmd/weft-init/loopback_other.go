//go:build !linux

package main

import (
	"errors"

	"github.com/weftmesh/weft/capture"
)

// weft-init runs in Linux pods; elsewhere it only prints rules (--dry-run).
func ipv6Enabled() (bool, string) { return true, "" }

func addLoopbackAddress(string) error { return errors.New("only on Linux") }

func applyNFTables([]*capture.Table, int) error { return errors.New("nftables: only on Linux") }
