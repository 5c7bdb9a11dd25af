package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lockstepfs/lockstep/raid"
)

type createFlags struct {
	layout, chunk, size, name string
	spares                    []string
}

func newCreate() *cobra.Command {
	var f createFlags
	cmd := &cobra.Command{
		Use:   "create --layout L [--chunk 64KiB] [--size S] [--name N] [--spare DIR]... DIR...",
		Short: "Create a new array, one member per directory, in slot order",
		Long: `Create a new array. Each DIR becomes one member (it is created if missing;
it must not already hold a member). Layouts: raid0 (no redundancy), raid1,
mirror:N, raid10, raid5, raid6, rs:K+M. Without --size the volume takes the
largest size that fits the members' file systems. Each --spare DIR is made a
hot spare: when a member is fenced, a failover takes it and rebuilds onto it.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, dirs []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			l, err := raid.Create(dirs, cfg)
			if err != nil {
				return err
			}
			lay, _ := raid.ParseLayout(l.Layout, l.Members)
			fmt.Fprintf(cmd.OutOrStdout(), "created array %q (%s): %s, %s, chunk %s\n",
				l.ArrayName, l.ArrayUUID, raid.FormatSize(l.Size), lay, raid.FormatSize(l.Chunk))
			if len(cfg.Spares) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "hot spares: %s\n", strings.Join(cfg.Spares, ", "))
			}
			if lay.Redundancy() == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s has no redundancy: losing any member loses the volume\n", l.Layout)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&f.layout, "layout", "", "raid0, raid1, mirror:N, raid10, raid5, raid6 or rs:K+M (required)")
	cmd.Flags().StringVar(&f.chunk, "chunk", "64KiB", "chunk size, a power of two from 4KiB to 16MiB")
	cmd.Flags().StringVar(&f.size, "size", "", "volume size, e.g. 10GiB (default: the largest that fits)")
	cmd.Flags().StringVar(&f.name, "name", "lockstep", "array name")
	cmd.Flags().StringArrayVar(&f.spares, "spare", nil, "a directory to make a hot spare (repeatable)")
	return cmd
}

// config validates the flags; it touches nothing.
func (f createFlags) config() (raid.Config, error) {
	if f.layout == "" {
		return raid.Config{}, fmt.Errorf("--layout is required: raid0, raid1, mirror:N, raid10, raid5, raid6 or rs:K+M")
	}
	chunk, err := raid.ParseSize(f.chunk)
	if err != nil {
		return raid.Config{}, fmt.Errorf("--chunk: %w", err)
	}
	var size int64
	if f.size != "" {
		if size, err = raid.ParseSize(f.size); err != nil {
			return raid.Config{}, fmt.Errorf("--size: %w", err)
		}
		if size == 0 {
			return raid.Config{}, fmt.Errorf("--size: must be more than zero (leave it out for the largest that fits)")
		}
	}
	return raid.Config{Layout: f.layout, Chunk: chunk, Size: size, Name: f.name, Spares: f.spares}, nil
}
