# shellcheck shell=bash
# Minimal shflags-compatible flag parser for the kiln stand-in Flatcar SDK.
# Written for the test fixture; it reproduces the observable behaviour of
# shflags as used by flatcar/scripts:
#   * DEFINE_string/DEFINE_boolean/DEFINE_integer NAME DEFAULT HELP [SHORT]
#   * booleans accept --NAME and --noNAME; values are FLAGS_TRUE=0 / FLAGS_FALSE=1
#   * --NAME=VALUE and --NAME VALUE; unambiguous long-option prefixes (GNU getopt)
#   * options and positional arguments may be mixed (getopt permutes)
#   * an unknown option makes FLAGS print
#       flags:WARN <getopt diagnostics>
#       flags:FATAL unable to parse provided options with getopt.
#     and return 2 (scripts do `FLAGS "$@" || exit 1`)
#   * positional arguments are returned in FLAGS_ARGV (a quoted string for
#     `eval set -- "${FLAGS_ARGV}"`)

FLAGS_TRUE=0
FLAGS_FALSE=1
FLAGS_ERROR=2
FLAGS_HELP=${FLAGS_HELP:-}

__standin_flag_names=()
declare -A __standin_flag_type=()
declare -A __standin_flag_default=()
declare -A __standin_flag_help=()
declare -A __standin_flag_short=()

_standin_define() {
    local type=$1 name=$2 default=$3 help=${4:-} short=${5:-}
    if [[ -n ${__standin_flag_type[${name}]:-} ]]; then
        echo "flags:WARN flag name (${name}) already defined" >&2
        return 1
    fi
    if [[ ${type} == boolean ]]; then
        case "${default}" in
            true|t|0) default=${FLAGS_TRUE} ;;
            false|f|1) default=${FLAGS_FALSE} ;;
            *) echo "flags:ERROR invalid default flag value '${default}'" >&2; return 2 ;;
        esac
    fi
    __standin_flag_names+=("${name}")
    __standin_flag_type[${name}]=${type}
    __standin_flag_default[${name}]=${default}
    __standin_flag_help[${name}]=${help}
    [[ -n ${short} ]] && __standin_flag_short[${short}]=${name}
    printf -v "FLAGS_${name}" '%s' "${default}"
}

DEFINE_string()  { _standin_define string "$@"; }
DEFINE_boolean() { _standin_define boolean "$@"; }
DEFINE_integer() { _standin_define integer "$@"; }

flags_help() {
    local name type def
    [[ -n ${FLAGS_HELP} ]] && echo "${FLAGS_HELP}" >&2
    echo "flags:" >&2
    for name in "${__standin_flag_names[@]}"; do
        type=${__standin_flag_type[${name}]}
        def=${__standin_flag_default[${name}]}
        if [[ ${type} == boolean ]]; then
            [[ ${def} -eq ${FLAGS_TRUE} ]] && def=true || def=false
            echo "  --[no]${name}:  ${__standin_flag_help[${name}]} (default: ${def})" >&2
        else
            echo "  --${name}:  ${__standin_flag_help[${name}]} (default: '${def}')" >&2
        fi
    done
}

FLAGS() {
    [[ -z ${__standin_flag_type[help]:-} ]] && DEFINE_boolean help false 'show this help' h

    local name longopts="" shortopts="" s
    for name in "${__standin_flag_names[@]}"; do
        case "${__standin_flag_type[${name}]}" in
            boolean) longopts+="${name},no${name}," ;;
            *) longopts+="${name}:," ;;
        esac
    done
    longopts=${longopts%,}
    for s in "${!__standin_flag_short[@]}"; do
        name=${__standin_flag_short[${s}]}
        if [[ ${__standin_flag_type[${name}]} == boolean ]]; then shortopts+="${s}"; else shortopts+="${s}:"; fi
    done

    local parsed rc
    if [[ $# -gt 0 ]]; then
        parsed=$(getopt -o "${shortopts}" -l "${longopts}" -- "$@" 2>&1)
        rc=$?
        if [[ ${rc} -ne 0 ]]; then
            echo "flags:WARN ${parsed}" >&2
            echo "flags:FATAL unable to parse provided options with getopt." >&2
            return ${FLAGS_ERROR}
        fi
    else
        parsed='--'
    fi

    eval set -- "${parsed}"
    local opt arg type
    while true; do
        opt=$1
        case "${opt}" in
            --) shift; break ;;
            --*)
                name=${opt#--}
                if [[ -n ${__standin_flag_type[${name}]:-} ]]; then
                    type=${__standin_flag_type[${name}]}
                    if [[ ${type} == boolean ]]; then
                        printf -v "FLAGS_${name}" '%s' "${FLAGS_TRUE}"; shift
                    else
                        arg=$2
                        if [[ ${type} == integer && ! ${arg} =~ ^-?[0-9]+$ ]]; then
                            echo "flags:FATAL invalid integer value (${arg})" >&2
                            return ${FLAGS_ERROR}
                        fi
                        printf -v "FLAGS_${name}" '%s' "${arg}"; shift 2
                    fi
                elif [[ ${name} == no* && ${__standin_flag_type[${name#no}]:-} == boolean ]]; then
                    printf -v "FLAGS_${name#no}" '%s' "${FLAGS_FALSE}"; shift
                else
                    echo "flags:FATAL unrecognized option (${name})" >&2
                    return ${FLAGS_ERROR}
                fi
                ;;
            -?)
                name=${__standin_flag_short[${opt#-}]:-}
                if [[ -z ${name} ]]; then
                    echo "flags:FATAL unrecognized option (${opt#-})" >&2
                    return ${FLAGS_ERROR}
                fi
                if [[ ${__standin_flag_type[${name}]} == boolean ]]; then
                    # short booleans toggle against the default
                    if [[ ${__standin_flag_default[${name}]} -eq ${FLAGS_FALSE} ]]; then
                        printf -v "FLAGS_${name}" '%s' "${FLAGS_TRUE}"
                    else
                        printf -v "FLAGS_${name}" '%s' "${FLAGS_FALSE}"
                    fi
                    shift
                else
                    printf -v "FLAGS_${name}" '%s' "$2"; shift 2
                fi
                ;;
        esac
        if [[ ${name} == help && ${FLAGS_help} -eq ${FLAGS_TRUE} ]]; then
            flags_help
            return ${FLAGS_FALSE}
        fi
    done

    FLAGS_ARGV=""
    local a q
    for a in "$@"; do
        printf -v q '%q' "${a}"
        FLAGS_ARGV+="${FLAGS_ARGV:+ }${q}"
    done
    return ${FLAGS_TRUE}
}
