package main

import (
	"os"

	// Client auth plugins (exec, oidc), as the upstream kubectl main imports them.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

// runKubectl is the upstream cmd/kubectl main: kubectl reads os.Args itself (plugins, -v), so
// present it the argv it would see as a standalone binary.
func runKubectl(args []string) int {
	os.Args = append([]string{"kubectl"}, args...)
	logs.GlogSetter(cmd.GetLogVerbosity(os.Args)) // nolint:errcheck
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err) // prints the error like kubectl does and exits non-zero
	}
	return 0
}
