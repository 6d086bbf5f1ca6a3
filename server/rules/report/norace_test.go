//go:build !race

package report

const race = false
