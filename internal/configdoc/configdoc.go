// Package configdoc describes a ConfigMap's keys in one place, so that the
// reference (docs/reference.md) is generated from the same list the code is
// tested against.
package configdoc

// Key is one key of a ConfigMap.
type Key struct {
	Name    string
	Default string // as written in the ConfigMap; empty: unset
	Meaning string
}

// ConfigMap is the documentation of one ConfigMap.
type ConfigMap struct {
	Namespace, Name string
	// Consumer says who reads it and how changes take effect.
	Consumer string
	Keys     []Key
}

// K is a Key, written compactly in the lists.
func K(name, def, meaning string) Key { return Key{Name: name, Default: def, Meaning: meaning} }
