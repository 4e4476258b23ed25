package crypto

import "crypto/sha1"

// sha1PRNG returns the first n bytes that Java's SecureRandom "SHA1PRNG"
// (sun.security.provider.SecureRandom) produces after setSeed(seed) on a
// fresh instance. Java's KeyGenerator.init(bits, sr) + generateKey() draws
// its key with a single sr.nextBytes(new byte[bits/8]), so this is the key.
//
// The generator:
//
//	state = SHA1(seed)                       // engineSetSeed on a fresh instance
//	repeat: out = SHA1(state); emit out      // 20 bytes per round
//	        updateState(state, out)
//
// updateState is the Java quirk: it adds out + 1 to state as a little-endian
// 160-bit number (byte 0 first) but on Java's *signed* bytes, so the carry
// between bytes is (int)state[i] + (int)out[i] + carry >> 8 with sign
// extension — it can be -1, 0 or 1, which unsigned arithmetic would not
// reproduce. And when the new state equals the old one, state[0]++.
//
// SHA-1 here is a key-derivation compatibility shim dictated by the
// counterparts, not a security choice.
func sha1PRNG(seed []byte, n int) []byte {
	state := sha1.Sum(seed)
	out := make([]byte, 0, n+sha1.Size)
	for len(out) < n {
		block := sha1.Sum(state[:])
		out = append(out, block[:]...)
		updateState(&state, &block)
	}
	return out[:n:n]
}

// updateState mirrors sun.security.provider.SecureRandom.updateState.
func updateState(state, output *[sha1.Size]byte) {
	last := 1
	changed := false
	for i := range state {
		v := int(int8(state[i])) + int(int8(output[i])) + last
		t := byte(v)
		changed = changed || state[i] != t
		state[i] = t
		last = v >> 8 // arithmetic shift, as Java's >> on an int
	}
	if !changed {
		state[0]++
	}
}
