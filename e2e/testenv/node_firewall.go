package main

// The iptables and nf_tables part of restoring the host (see node_host.go).

import (
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
)

// nodeChainPrefixes: iptables chains the node's components create (kubelet: KUBE-FIREWALL,
// KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT; CNI plugins: CNI-*). A chain with such a name that
// did not exist before is removed at teardown, together with the rules that jump to it.
var nodeChainPrefixes = []string{"KUBE-", "CNI-"}

var (
	iptablesBins   = []string{"iptables", "ip6tables"}
	iptablesTables = []string{"filter", "nat", "mangle", "raw"}
)

func iptablesRules(bin, table string) ([]string, error) {
	out, err := run(bin, "-w", "-t", table, "-S")
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSpace(out), "\n"), nil
}

// chainsOf returns the chain names of `iptables -S` output (-P: built-in, -N: user chains).
func chainsOf(rules []string) []string {
	var chains []string
	for _, r := range rules {
		if f := strings.Fields(r); len(f) >= 2 && (f[0] == "-P" || f[0] == "-N") {
			chains = append(chains, f[1])
		}
	}
	return chains
}

func isNodeChain(name string) bool {
	for _, p := range nodeChainPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// removeNewChains deletes, per family and table, the node's chains that did not exist before:
// first the rules jumping to them (e.g. INPUT/OUTPUT -j KUBE-FIREWALL), then the chains. One
// iptables-restore --noflush per table: it parses the quoted comments of `-S` output.
func removeNewChains(before map[string][]string) error {
	var errs []error
	for _, bin := range iptablesBins {
		for _, table := range iptablesTables {
			rules, err := iptablesRules(bin, table)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			var remove []string
			for _, c := range chainsOf(rules) {
				if isNodeChain(c) && !slices.Contains(before[bin+" "+table], c) {
					remove = append(remove, c)
				}
			}
			if len(remove) == 0 {
				continue
			}
			if err := iptablesRestore(bin, removeChainsScript(table, rules, remove)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func removeChainsScript(table string, rules, remove []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%s\n", table)
	for _, r := range rules {
		if !strings.HasPrefix(r, "-A ") {
			continue
		}
		chain := strings.Fields(r)[1]
		if slices.Contains(remove, chain) {
			continue // flushed below
		}
		for _, c := range remove {
			if regexp.MustCompile(` -[jg] ` + regexp.QuoteMeta(c) + `( |$)`).MatchString(r) {
				fmt.Fprintf(&b, "-D %s\n", r[len("-A "):])
				break
			}
		}
	}
	for _, c := range remove {
		fmt.Fprintf(&b, "-F %s\n", c)
	}
	for _, c := range remove {
		fmt.Fprintf(&b, "-X %s\n", c)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func iptablesRestore(bin, script string) error {
	cmd := exec.Command(bin+"-restore", "-w", "--noflush")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s-restore: %v: %s (input:\n%s)", bin, err, strings.TrimSpace(string(out)), script)
	}
	return nil
}

func nftTables() ([]string, error) {
	out, err := run("nft", "list", "tables")
	if err != nil {
		return nil, err
	}
	var tables []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			tables = append(tables, l)
		}
	}
	return tables, nil
}

// removeNewNftTables: with the nf_tables backend, the first iptables call on a table creates
// it, and removing its rules and chains leaves it (empty) in `iptables-save`. Delete the ip/ip6
// tables that did not exist before and hold nothing but ACCEPT policies again.
func removeNewNftTables(before []string) error {
	now, err := nftTables()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range now {
		f := strings.Fields(t) // table FAMILY NAME
		if slices.Contains(before, t) || len(f) != 3 || (f[1] != "ip" && f[1] != "ip6") {
			continue
		}
		bin := map[string]string{"ip": "iptables", "ip6": "ip6tables"}[f[1]]
		rules, err := iptablesRules(bin, f[2])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		empty := true
		for _, r := range rules {
			if !strings.HasPrefix(r, "-P ") || !strings.HasSuffix(r, " ACCEPT") {
				empty = false
			}
		}
		if !empty {
			continue // someone else's rules: leave the table
		}
		if _, err := run("nft", "delete", "table", f[1], f[2]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
