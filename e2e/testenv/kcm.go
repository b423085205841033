package main

import (
	"fmt"
	"strings"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

// kcmControllers are the controllers the tests need: workloads (so a Deployment gets a
// ReplicaSet and Pods), garbage collection, namespace deletion, and the service-account
// machinery (default ServiceAccount, tokens, kube-root-ca.crt). Node lifecycle and node IPAM
// are deliberately off: there is no kubelet (or, with --with-node, one node whose readiness
// testenv itself checks), and Pod IPs are what spiderpool manages.
var kcmControllers = []string{
	"deployment-controller",
	"replicaset-controller",
	"statefulset-controller",
	"daemonset-controller",
	"job-controller",
	"cronjob-controller",
	"garbage-collector-controller",
	"namespace-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller",
}

// kcmNodeControllers are added when a real node runs (--with-node). kube-apiserver's
// aggregator routing (--enable-aggregator-routing, which makes it reach admission webhooks via
// a Service's endpoints: there is no kube-proxy) resolves Services through EndpointSlices
// (k8s.io/apiserver/pkg/util/proxy.ResolveEndpoint in 1.36), so the EndpointSlice controller
// must run; the Endpoints controller keeps `kubectl get endpoints` truthful for tests.
var kcmNodeControllers = []string{
	"endpointslice-controller",
	"endpoints-controller",
}

func kcmArgs(kubeconfig string, port int, p *pki, withNode bool) []string {
	controllers := kcmControllers
	if withNode {
		controllers = append(append([]string{}, kcmControllers...), kcmNodeControllers...)
	}
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		// Clients authenticate to the apiserver with a token only, so it publishes no client CA in
		// kube-system/extension-apiserver-authentication; don't keep looking it up.
		"--authentication-skip-lookup=true",
		"--controllers=" + strings.Join(controllers, ","),
		"--service-account-private-key-file=" + p.saKey,
		"--root-ca-file=" + p.caCert,
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"-v=0",
	}
}

// runKCM is the child process `testenv kcm ARGS`: the upstream cmd/kube-controller-manager
// main. The controller-manager cannot share this process with the apiserver: each installs a
// once-only signal handler and registers global flags, metrics and feature gates.
func runKCM(args []string) int {
	command := app.NewControllerManagerCommand()
	command.SetArgs(args)
	return cli.Run(command)
}
