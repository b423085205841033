//! Test harness: starts (or reuses) the local control plane and hands out clients and namespaces.
