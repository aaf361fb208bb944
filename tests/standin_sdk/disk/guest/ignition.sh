# shellcheck shell=dash disable=SC2034  # sourced by /init (busybox ash: has local), which reads HANG, POWEROFF, IGN_ERR
# Sourced by /init.  A tiny subset of Ignition spec v3 (files stage):
#   ignition.version             3.0.0 .. 3.5.0(-experimental)
#   storage.files[]              path, mode, contents.source (data: URLs only:
#                                "data:,<url-encoded>" or "data:;base64,<b64>"),
#                                contents.compression ("" or "gzip")
#   storage.directories[]        path, mode
#   storage.links[]              path, target (symbolic links)
#   passwd.users[]               name, sshAuthorizedKeys[] (user created if missing)
# Everything else is accepted and ignored.  Sets IGN_ERR on failure.
# Special files: /etc/kiln-standin/hang (hang before markers),
#                /etc/kiln-standin/poweroff (power off after markers).
IGN_CONFIG=${IGN_CONFIG:-/sys/firmware/qemu_fw_cfg/by_name/opt/org.flatcar-linux/config/raw}
SYSROOT=${SYSROOT:-/sysroot}
IGN_ERR=""
IGN_OP=0

pct() {  # decode a percent-encoded string to stdout (bytes)
    printf '%b' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/%\([0-9A-Fa-f][0-9A-Fa-f]\)/\\x\1/g')"
}
ign_log() { echo "ignition[$IGN_PID]: $*"; }
ign_get() {  # ign_get PATH -> value (still percent-encoded); rc 1 when absent
    awk -F '\t' -v p="$1" '$1 == p { print $3; f = 1; exit } END { exit !f }' "$IGN_FLAT"
}
ign_type() { awk -F '\t' -v p="$1" '$1 == p { print $2; exit }' "$IGN_FLAT"; }
ign_count() {  # number of elements of array PATH
    awk -F '\t' -v p="$1." 'index($1, p) == 1 { r = substr($1, length(p) + 1); sub(/\..*/, "", r); if (r + 0 >= c) c = r + 1 } END { print c + 0 }' "$IGN_FLAT"
}

ign_write_file() {  # $1 = index into storage.files
    local b="storage.files.$1" path src mode comp hdr payload dst tmp
    path=$(pct "$(ign_get "$b.path")") || { IGN_ERR="storage.files.$1: path is required"; return 1; }
    case "$path" in /*) ;; *) IGN_ERR="storage.files.$1: path must be absolute: $path"; return 1 ;; esac
    dst="$SYSROOT$path"
    IGN_OP=$((IGN_OP + 1))
    ign_log "files: createFilesystemsFiles: createFiles: op($IGN_OP): [started]  writing file \"$dst\""
    mkdir -p "$(dirname "$dst")"
    tmp=/tmp/ign.file
    : > "$tmp"
    if src=$(ign_get "$b.contents.source"); then
        case "$src" in
            data:*) ;;
            *:*) IGN_ERR="storage.files.$1: unsupported source scheme \"$(pct "${src%%:*}")\" (stand-in supports data: URLs only)"; return 1 ;;
            *) IGN_ERR="storage.files.$1: source is not a URL"; return 1 ;;
        esac
        hdr=${src%%,*}; payload=${src#*,}
        [ "$hdr" != "$src" ] || { IGN_ERR="storage.files.$1: malformed data URL"; return 1; }
        hdr=$(pct "$hdr")
        case "$hdr" in
            data:*\;base64)
                printf '%s' "$(pct "$payload")" | base64 -d > "$tmp" 2>/dev/null || { IGN_ERR="storage.files.$1: invalid base64 in data URL"; return 1; } ;;
            data:*) pct "$(pct "$payload")" > "$tmp" ;;
            *) IGN_ERR="storage.files.$1: unsupported source scheme \"${hdr%%:*}\" (stand-in supports data: URLs only)"; return 1 ;;
        esac
        comp=$(pct "$(ign_get "$b.contents.compression")")
        case "$comp" in
            "") ;;
            gzip) gunzip -c "$tmp" > "$tmp.d" || { IGN_ERR="storage.files.$1: gzip decompression failed"; return 1; }; mv "$tmp.d" "$tmp" ;;
            *) IGN_ERR="storage.files.$1: unsupported compression \"$comp\""; return 1 ;;
        esac
    fi
    mode=$(ign_get "$b.mode") || mode=420
    case "$mode" in *[!0-9]*) IGN_ERR="storage.files.$1: mode must be an integer"; return 1 ;; esac
    mv "$tmp" "$dst" && chmod "$(printf '%o' "$mode")" "$dst"
    ign_log "files: createFilesystemsFiles: createFiles: op($IGN_OP): [finished] writing file \"$dst\""
    echo "kiln-standin: ignition wrote $path sha256=$(sha256sum "$dst" | cut -d' ' -f1) size=$(wc -c < "$dst")"
    case "$path" in
        /etc/kiln-standin/hang) HANG=1 ;;
        /etc/kiln-standin/poweroff) POWEROFF=1 ;;
    esac
}

ign_user() {  # $1 = index into passwd.users
    local b="passwd.users.$1" name home uid n k keys
    name=$(pct "$(ign_get "$b.name")") || { IGN_ERR="passwd.users.$1: name is required"; return 1; }
    if ! grep -q "^$name:" "$SYSROOT/etc/passwd" 2>/dev/null; then
        uid=1000; while grep -q "^[^:]*:[^:]*:$uid:" "$SYSROOT/etc/passwd"; do uid=$((uid + 1)); done
        echo "$name:x:$uid:$uid::/home/$name:/bin/sh" >> "$SYSROOT/etc/passwd"
        echo "$name:x:$uid:" >> "$SYSROOT/etc/group"
        ign_log "files: ensureUsers: op(1): [finished] creating or modifying user \"$name\""
    fi
    home=$(awk -F: -v u="$name" '$1 == u { print $6 }' "$SYSROOT/etc/passwd")
    [ "$name" = root ] && home=/root
    [ -n "$home" ] || home=/home/$name
    uid=$(awk -F: -v u="$name" '$1 == u { print $3 ":" $4 }' "$SYSROOT/etc/passwd")
    n=$(ign_count "$b.sshAuthorizedKeys")
    [ "$n" -gt 0 ] || return 0
    mkdir -p "$SYSROOT$home/.ssh"
    keys="$SYSROOT$home/.ssh/authorized_keys"
    : > "$keys"
    k=0
    while [ $k -lt "$n" ]; do
        pct "$(ign_get "$b.sshAuthorizedKeys.$k")" >> "$keys"; echo >> "$keys"; k=$((k + 1))
    done
    chmod 700 "$SYSROOT$home" "$SYSROOT$home/.ssh"; chmod 600 "$keys"
    chown -R "$uid" "$SYSROOT$home" 2>/dev/null
    ign_log "files: ensureUsers: op(2): [finished] adding ssh keys to user \"$name\""
    echo "kiln-standin: ignition wrote ${home}/.ssh/authorized_keys keys=$n sha256=$(sha256sum "$keys" | cut -d' ' -f1)"
}

ignition_run() {
    local v i n
    # sysfs reports size 0 for fw_cfg "raw" files: copy first, then test.
    cat "$IGN_CONFIG" > /tmp/ign.json 2>/dev/null || : > /tmp/ign.json
    if [ ! -s /tmp/ign.json ]; then
        ign_log "no config provided by user"
        return 0
    fi
    ign_log "fetched user config from \"qemu\""
    IGN_FLAT=/tmp/ign.flat
    awk -f /lib/kiln-standin/ignition.awk < /tmp/ign.json > "$IGN_FLAT"
    if grep -q '^ERROR' "$IGN_FLAT"; then
        IGN_ERR=$(grep '^ERROR' "$IGN_FLAT" | cut -f2); return 1
    fi
    [ "$(ign_type '')" = o ] || { IGN_ERR="config is not valid: top level is not an object"; return 1; }
    v=$(ign_get ignition.version) || { IGN_ERR="unsupported config version (ignition.version missing)"; return 1; }
    case "$v" in
        3.[0-5].0|3.[0-5].0-experimental) ;;
        *) IGN_ERR="unsupported config version \"$(pct "$v")\""; return 1 ;;
    esac
    ign_log "parsed config version $v"
    n=$(ign_count storage.directories); i=0
    while [ $i -lt "$n" ]; do
        p=$(pct "$(ign_get "storage.directories.$i.path")")
        case "$p" in /*) ;; *) IGN_ERR="storage.directories.$i: path must be absolute"; return 1 ;; esac
        mkdir -p "$SYSROOT$p"
        m=$(ign_get "storage.directories.$i.mode") && chmod "$(printf '%o' "$m")" "$SYSROOT$p"
        i=$((i + 1))
    done
    n=$(ign_count storage.files); i=0
    while [ $i -lt "$n" ]; do ign_write_file $i || return 1; i=$((i + 1)); done
    n=$(ign_count storage.links); i=0
    while [ $i -lt "$n" ]; do
        p=$(pct "$(ign_get "storage.links.$i.path")"); t=$(pct "$(ign_get "storage.links.$i.target")")
        case "$p" in /*) ;; *) IGN_ERR="storage.links.$i: path must be absolute"; return 1 ;; esac
        mkdir -p "$(dirname "$SYSROOT$p")"; ln -sfn "$t" "$SYSROOT$p"
        i=$((i + 1))
    done
    n=$(ign_count passwd.users); i=0
    while [ $i -lt "$n" ]; do ign_user $i || return 1; i=$((i + 1)); done
    return 0
}
