/* UTF-8 sequences: decoding one, and cutting text without splitting one (pure). */
#ifndef BG_UTF8_H
#define BG_UTF8_H

#include <stddef.h>
#include <stdint.h>

/*
 * Length of the UTF-8 sequence at p (len > 0 bytes left) with its code
 * point in *cp, or 0 if it is not UTF-8: overlong forms, surrogates and
 * code points past U+10FFFF are rejected, so a text has one byte form.
 */
size_t utf8_next(const unsigned char *p, size_t len, uint32_t *cp);

/*
 * The length of the longest prefix of s[0..len) that has at most max
 * bytes and does not end inside a multi-byte sequence.
 */
size_t utf8_prefix(const char *s, size_t len, size_t max);

#endif
