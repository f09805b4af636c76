package dns

import "testing"

// TestConfigMapDocCoversEveryKey: the generated reference documents exactly the
// keys ParseConfig accepts.
func TestConfigMapDocCoversEveryKey(t *testing.T) {
	documented := map[string]bool{}
	for _, k := range ConfigMapDoc().Keys {
		if documented[k.Name] {
			t.Errorf("key %q documented twice", k.Name)
		}
		documented[k.Name] = true
		if !knownKeys[k.Name] {
			t.Errorf("key %q is documented but ParseConfig does not accept it", k.Name)
		}
		if k.Meaning == "" {
			t.Errorf("key %q has no meaning", k.Name)
		}
	}
	for k := range knownKeys {
		if !documented[k] {
			t.Errorf("key %q is accepted but not documented", k)
		}
	}
}
