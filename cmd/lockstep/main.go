// Command lockstep keeps a redundant virtual volume on a set of member
// directories. See `lockstep --help`.
package main

import (
	"fmt"
	"os"

	"github.com/lockstepfs/lockstep/cmd/lockstep/cli"
	"github.com/lockstepfs/lockstep/raid"
)

func main() {
	raid.UseProcs()
	if err := cli.New().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lockstep:", err)
		os.Exit(1)
	}
}
