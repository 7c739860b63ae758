//go:build !linux

package proxy_test

func setupTestNetns() {}
