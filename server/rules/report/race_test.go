//go:build race

package report

// race: the race detector slows the linear programmes too much for the
// full property test.
const race = true
