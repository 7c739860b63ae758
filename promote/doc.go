// Package promote moves images by digest through Pipeline stages with
// gates. It is built by the trust and promotion issue (#6); nothing is here
// yet.
package promote
