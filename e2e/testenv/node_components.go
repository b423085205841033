package main

import (
	"context"

	"k8s.io/component-base/cli"
	schedulerapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"
)

// runKubelet is the child process `testenv kubelet ARGS`: the upstream cmd/kubelet main. Like
// the controller-manager it cannot share the apiserver's process (global flags, metrics,
// feature gates and its own signal handler).
func runKubelet(args []string) int {
	command := kubeletapp.NewKubeletCommand(context.Background())
	command.SetArgs(args)
	return cli.Run(command)
}

// runScheduler is the child process `testenv kube-scheduler ARGS`: the upstream
// cmd/kube-scheduler main.
func runScheduler(args []string) int {
	command := schedulerapp.NewSchedulerCommand()
	command.SetArgs(args)
	return cli.Run(command)
}
