// Command weft is the command-line tool for operating a weft mesh.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/internal/version"
)

func main() {
	root := &cobra.Command{
		Use:           "weft",
		Short:         "Operate a weft service mesh",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print weft's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "weft", version.Get().String())
		},
	})
	if err := root.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "weft: %v\n", err)
		os.Exit(1)
	}
}
