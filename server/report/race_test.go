//go:build race

package report

// race: the race detector slows the linear programmes about tenfold.
const race = true
