# Flatten a JSON document into lines "PATH<TAB>TYPE<TAB>VALUE" (busybox awk).
# TYPE: o object, a array, s string, n number, b boolean, z null.
# Strings (and object keys inside PATH) are emitted percent-encoded: every byte
# outside [A-Za-z0-9._~/:,;=+@!*'()$-] becomes %XX, JSON escapes are decoded
# first.  On a syntax error prints "ERROR<TAB><reason>" and exits 2.
BEGIN {
    RS = "\001"; safe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~/:,;=+@!*'()$-"
    for (i = 1; i < 256; i++) ord[sprintf("%c", i)] = i
    hexd = "0123456789abcdef"
}
{ src = src $0 }
END {
    n = length(src); pos = 1; err = ""
    ws()
    if (pos > n) { print "ERROR\tnot a config (empty)"; exit 2 }
    value("")
    if (err == "") { ws(); if (pos <= n) err = "trailing data at offset " pos }
    if (err != "") { print "ERROR\tconfig is not valid: " err; exit 2 }
}
function ws(  c) {
    while (pos <= n) { c = substr(src, pos, 1); if (c == " " || c == "\t" || c == "\n" || c == "\r") pos++; else break }
}
function enc(c) {  # percent-encode one byte unless safe
    if (index(safe, c)) return c
    return sprintf("%%%02X", ord[c])
}
function encnum(v) { return sprintf("%%%02X", v) }
function utf8(cp) {
    if (cp < 128) return enc(sprintf("%c", cp))
    if (cp < 2048) return encnum(192 + int(cp / 64)) encnum(128 + cp % 64)
    if (cp < 65536) return encnum(224 + int(cp / 4096)) encnum(128 + int(cp / 64) % 64) encnum(128 + cp % 64)
    return encnum(240 + int(cp / 262144)) encnum(128 + int(cp / 4096) % 64) encnum(128 + int(cp / 64) % 64) encnum(128 + cp % 64)
}
function hex4(s,  i, v, d) {
    v = 0
    for (i = 1; i <= 4; i++) { d = index(hexd, tolower(substr(s, i, 1))); if (!d) return -1; v = v * 16 + d - 1 }
    return v
}
function jstring(  out, c, e, cp, lo) {   # pos at opening quote
    pos++; out = ""
    while (pos <= n) {
        c = substr(src, pos, 1)
        if (c == "\"") { pos++; return out }
        if (c == "\\") {
            e = substr(src, pos + 1, 1); pos += 2
            if (e == "\"") out = out "%22"
            else if (e == "\\") out = out "%5C"
            else if (e == "/") out = out "/"
            else if (e == "n") out = out "%0A"
            else if (e == "t") out = out "%09"
            else if (e == "r") out = out "%0D"
            else if (e == "b") out = out "%08"
            else if (e == "f") out = out "%0C"
            else if (e == "u") {
                cp = hex4(substr(src, pos, 4)); if (cp < 0) { err = "bad \\u escape at offset " pos; return "" }
                pos += 4
                if (cp >= 55296 && cp < 56320 && substr(src, pos, 2) == "\\u") {
                    lo = hex4(substr(src, pos + 2, 4))
                    if (lo >= 56320 && lo < 57344) { cp = 65536 + (cp - 55296) * 1024 + (lo - 56320); pos += 6 }
                }
                out = out utf8(cp)
            } else { err = "bad escape at offset " pos; return "" }
            continue
        }
        if (ord[c] < 32) { err = "control character in string at offset " pos; return "" }
        out = out enc(c); pos++
    }
    err = "unterminated string"; return ""
}
function value(path,  c, k, i, m) {
    if (err != "") return
    ws(); if (pos > n) { err = "unexpected end of input"; return }
    c = substr(src, pos, 1)
    if (c == "{") {
        print path "\to\t"; pos++; ws()
        if (substr(src, pos, 1) == "}") { pos++; return }
        while (1) {
            ws(); if (substr(src, pos, 1) != "\"") { err = "expected object key at offset " pos; return }
            k = jstring(); if (err != "") return
            ws(); if (substr(src, pos, 1) != ":") { err = "expected ':' at offset " pos; return }
            pos++
            value(path == "" ? k : path "." k); if (err != "") return
            ws(); c = substr(src, pos, 1); pos++
            if (c == "}") return
            if (c != ",") { err = "expected ',' or '}' at offset " (pos - 1); return }
        }
    }
    if (c == "[") {
        print path "\ta\t"; pos++; ws(); i = 0
        if (substr(src, pos, 1) == "]") { pos++; return }
        while (1) {
            value(path "." i); if (err != "") return
            i++; ws(); c = substr(src, pos, 1); pos++
            if (c == "]") return
            if (c != ",") { err = "expected ',' or ']' at offset " (pos - 1); return }
        }
    }
    if (c == "\"") { k = jstring(); if (err == "") print path "\ts\t" k; return }
    if (substr(src, pos, 4) == "true") { pos += 4; print path "\tb\ttrue"; return }
    if (substr(src, pos, 5) == "false") { pos += 5; print path "\tb\tfalse"; return }
    if (substr(src, pos, 4) == "null") { pos += 4; print path "\tz\t"; return }
    if (match(substr(src, pos), /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/)) {
        print path "\tn\t" substr(src, pos, RLENGTH); pos += RLENGTH; return
    }
    err = "unexpected character at offset " pos
}
