# shellcheck shell=bash disable=SC2034  # sourced: its globals are for the scripts that source it
# Stand-in sdk_lib/sdk_container_common.sh (kiln test fixture).
# Same globals and helper semantics as flatcar/scripts' version: version-file
# handling, version string parsing, container engine detection, .sdkenv.

sdk_container_common_versionfile="sdk_container/.repo/manifests/version.txt"
sdk_container_common_registry="ghcr.io/flatcar"
sdk_container_common_env_file="sdk_container/.sdkenv"

# Engine: docker alone -> docker; podman alone -> podman; both -> podman only
# if `docker help` mentions podman.  The real SDK uses `sudo podman`; the
# stand-in runs as root and calls podman directly.
is_podman=false
if command -v podman >/dev/null 2>&1; then
    if ! command -v docker >/dev/null 2>&1; then
        is_podman=true
    elif docker help 2>/dev/null | grep -qi podman; then
        is_podman=true
    fi
fi
if "${is_podman}"; then
    docker_a=( podman )
    [[ $(id -u) -ne 0 ]] && docker_a=( sudo podman )
else
    docker_a=( docker )
fi
docker=${docker_a[*]}

call_docker() { "${docker_a[@]}" "$@"; }

yell() { echo -e "\n###### $* ######"; }

get_git_version() {
    local tag
    tag=$(git tag --points-at HEAD)
    if [[ -n ${tag} ]]; then
        echo "${tag}"
    else
        git describe --tags
    fi
}

_versionfile_value() {
    ( source "${sdk_container_common_versionfile}"; eval "echo \"\${$1}\"" )
}
get_sdk_version_from_versionfile() { _versionfile_value FLATCAR_SDK_VERSION; }
get_version_from_versionfile() { _versionfile_value FLATCAR_VERSION; }

# 1.2.3 -> official; anything with a suffix is not
is_official() {
    [[ $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]
}
# [channel-]M.m.p[-+]suffix -> suffix
build_id_from_version() {
    if [[ $1 =~ ^([a-z]+-)?[0-9.]+[-+](.*)$ ]]; then
        echo "${BASH_REMATCH[2]}"
    fi
}
# channel prefix, "developer" unless alpha/beta/stable/lts
channel_from_version() {
    local c=${1%%-*}
    case "${c}" in
        alpha|beta|stable|lts) echo "${c}" ;;
        *) echo developer ;;
    esac
}
get_git_channel() { channel_from_version "$(get_git_version)"; }
# [channel-]M.m.p... -> M.m.p
vernum_from_version() {
    if [[ $1 =~ ^([a-z]+-)?([0-9.]+) ]]; then
        echo "${BASH_REMATCH[2]}"
    fi
}
# [channel-]M.m.p[-suffix] -> M.m.p[+suffix]
strip_version_prefix() {
    local id vn
    id=$(build_id_from_version "$1")
    vn=$(vernum_from_version "$1")
    if [[ -n ${id} ]]; then echo "${vn}+${id}"; else echo "${vn}"; fi
}
vernum_to_docker_image_version() { echo "${1//+/-}"; }

create_versionfile() {
    local sdk_version=$1
    local os_version=${2:-$1}
    local build_id version_id
    build_id=$(build_id_from_version "${os_version}")
    version_id=$(vernum_from_version "${os_version}")
    sdk_version=$(strip_version_prefix "${sdk_version}")
    os_version=$(strip_version_prefix "${os_version}")
    yell "Writing versionfile '${sdk_container_common_versionfile}' to SDK '${sdk_version}', OS '${os_version}'."
    printf '%s\n' \
        "FLATCAR_VERSION=${os_version}" \
        "FLATCAR_VERSION_ID=${version_id}" \
        "FLATCAR_BUILD_ID=\"${build_id}\"" \
        "FLATCAR_SDK_VERSION=${sdk_version}" > "${sdk_container_common_versionfile}"
}

# Variables that cross into the SDK via sdk_container/.sdkenv (the real list).
SDK_ENV_PASSTHROUGH=(
    FLATCAR_BUILD_ID COREOS_OFFICIAL
    EMAIL GIT_AUTHOR_EMAIL GIT_AUTHOR_NAME GIT_COMMITTER_EMAIL GIT_COMMITTER_NAME
    GIT_PROXY_COMMAND GIT_SSH RSYNC_PROXY GPG_AGENT_INFO
    USE FEATURES PORTAGE_USERNAME FORCE_STAGES SIGNER
    SBSIGN_KEY SBSIGN_CERT SBSIGN_DB_KEY SBSIGN_DB_CERT SHIM_SIGNING_CERTIFICATE
    MODULE_SIGNING_KEY_DIR SYSEXT_SIGNING_KEY_DIR
    all_proxy ftp_proxy http_proxy https_proxy no_proxy
)

setup_sdk_env() {
    local var f=${sdk_container_common_env_file}
    rm -f "${f}"
    GNUPGHOME="${GNUPGHOME:-$HOME/.gnupg}"
    if [[ -d ${GNUPGHOME} ]]; then
        printf '%s\n' 'GNUPGHOME="/home/sdk/.gnupg"' 'export GNUPGHOME' >> "${f}"
        export GNUPGHOME
    fi
    if [[ -e ${SSH_AUTH_SOCK:-} ]]; then
        printf '%s\n' "SSH_AUTH_SOCK=\"/run/sdk/ssh/$(basename "${SSH_AUTH_SOCK}")\"" 'export SSH_AUTH_SOCK' >> "${f}"
    fi
    for var in "${SDK_ENV_PASSTHROUGH[@]}"; do
        if [[ -n ${!var:-} ]]; then
            printf '%s\n' "${var}=\"${!var}\"" "export ${var}" >> "${f}"
        fi
    done
}

# Volume options for gpg home / agent and ssh agent socket.
gnupg_ssh_gcloud_mount_opts() {
    local -n _ref=$1
    local agent
    agent="/run/user/$(id -u)/gnupg"
    _ref=()
    [[ -d ${GNUPGHOME:-} ]] && _ref+=( -v "${GNUPGHOME}:/home/sdk/.gnupg" )
    [[ -d ${agent} ]] && _ref+=( -v "${agent}:${agent}" )
    [[ -e ${SSH_AUTH_SOCK:-} ]] && _ref+=( -v "$(dirname "${SSH_AUTH_SOCK}"):/run/sdk/ssh" )
    return 0
}
