# shellcheck shell=bash disable=SC2034,SC2154,SC2317,SC2013  # SC2317: inherit() stubs are called by the sourced ebuilds
# Stand-in portage (kiln test fixture): a tiny emerge for build_packages.
# Reads the overlays at their real place (sdk_container/src/third_party/{coreos-overlay,portage-stable},
# /mnt/host/source/src/third_party/... in the SDK), resolves atoms to the best visible version and decides
# binary vs source like `emerge --update --deep --newuse --usepkg --with-bdeps y [--getbinpkg]
# [--usepkg-exclude=...]` (the EMERGE_FLAGS of vendor build_packages:122-160):
#   * installed (vdb /build/<board>/var/db/pkg) with the same CPV, USE and slot-operator bindings -> skipped
#   * else a binpkg (local PKGDIR, then file:// PORTAGE_BINHOST) with the same CPV, USE and bindings -> binary,
#     whatever the ebuild or a user patch looks like now (the flatcar/Flatcar#473 trap)
#   * else (or when the package matches --usepkg-exclude) -> built from source, binpkg + Packages written.
# Output lines are portage's: MergeListItem.py ("Emerging [binary] (N of M) cpv::repo for ROOT"),
# PackageMerge.py ("Installing/Completed (N of M) cpv::repo to ROOT"), JobStatusDisplay._format_msg (">>> ").
# Simplifications: no blockers, || ( ) takes the first choice, version order via `sort -V` with the PMS
# suffixes mapped (_alpha<_beta<_pre<_rc<release<_p), ebuilds are sourced (only variables + src_install).

SP_REPOS=(coreos-overlay portage-stable)   # priority order: coreos-overlay wins ties (like its repos.conf)

sp_repo_dir() { echo "${SRC_ROOT}/third_party/$1"; }

# ---------------------------------------------------------------- versions --
sp_verkey() {
  local v=$1
  v=${v//_alpha/\~alpha}; v=${v//_beta/\~beta}; v=${v//_pre/\~pre}; v=${v//_rc/\~rc}; v=${v//_p/+p}
  echo "${v}"
}
# sp_vercmp A B -> prints -1/0/1
sp_vercmp() {
  [[ $1 == "$2" ]] && { echo 0; return; }
  local a b first
  a=$(sp_verkey "$1"); b=$(sp_verkey "$2")
  first=$(printf '%s\n%s\n' "${a}" "${b}" | sort -V | head -n1)
  if [[ ${a} == "${b}" ]]; then echo 0; elif [[ ${first} == "${a}" ]]; then echo -1; else echo 1; fi
}
sp_strip_rev() { echo "${1%-r[0-9]*}"; }

# ------------------------------------------------------------------- atoms --
# sp_atom_parse ATOM -> A_OP A_CP A_VER A_SLOT A_SLOTOP A_REPO
sp_atom_parse() {
  local a=$1
  A_OP="" A_CP="" A_VER="" A_SLOT="" A_SLOTOP="" A_REPO=""
  a=${a%%\[*}
  if [[ ${a} == *::* ]]; then A_REPO=${a##*::}; a=${a%%::*}; fi
  if [[ ${a} == *:* ]]; then
    A_SLOT=${a#*:}; a=${a%%:*}
    case "${A_SLOT}" in
      "=") A_SLOTOP="="; A_SLOT="" ;;
      "*") A_SLOTOP="*"; A_SLOT="" ;;
      *=) A_SLOTOP="="; A_SLOT=${A_SLOT%=} ;;
    esac
  fi
  if [[ ${a} =~ ^(\>=|\<=|=|~|\>|\<)(.*)$ ]]; then
    A_OP=${BASH_REMATCH[1]}; a=${BASH_REMATCH[2]}
    if [[ ${a} =~ ^(.+)-([0-9][0-9.]*[a-z]?((_(alpha|beta|pre|rc|p)[0-9]*)*)(-r[0-9]+)?\*?)$ ]]; then
      A_CP=${BASH_REMATCH[1]}; A_VER=${BASH_REMATCH[2]}
    else
      A_CP=${a}
    fi
  else
    A_CP=${a}
  fi
}

# sp_ver_matches OP WANT HAVE
sp_ver_matches() {
  local op=$1 want=$2 have=$3 c
  [[ -z ${op} ]] && return 0
  case "${op}" in
    "=")
      if [[ ${want} == *\* ]]; then [[ ${have} == "${want%\*}"* ]]; return; fi
      [[ $(sp_vercmp "${have}" "${want}") == 0 ]] ;;
    "~") [[ $(sp_strip_rev "${have}") == "$(sp_strip_rev "${want}")" ]] ;;
    ">=") c=$(sp_vercmp "${have}" "${want}"); [[ ${c} != -1 ]] ;;
    "<=") c=$(sp_vercmp "${have}" "${want}"); [[ ${c} != 1 ]] ;;
    ">") [[ $(sp_vercmp "${have}" "${want}") == 1 ]] ;;
    "<") [[ $(sp_vercmp "${have}" "${want}") == -1 ]] ;;
  esac
}

# sp_atom_matches ATOM CPV SLOT REPO (SLOT = "0" or "0/3")
sp_atom_matches() {
  local atom=$1 cpv=$2 slot=$3 repo=${4:-}
  sp_atom_parse "${atom}"
  local cp=${cpv%-[0-9]*} ver
  [[ ${cpv} =~ ^(.+)-([0-9][^-]*(-r[0-9]+)?)$ ]] && { cp=${BASH_REMATCH[1]}; ver=${BASH_REMATCH[2]}; }
  [[ ${cp} == "${A_CP}" ]] || return 1
  [[ -z ${A_REPO} || ${A_REPO} == "${repo}" ]] || return 1
  if [[ -n ${A_SLOT} ]]; then
    if [[ ${A_SLOT} == */* ]]; then [[ ${slot} == "${A_SLOT}" ]] || return 1
    else [[ ${slot%%/*} == "${A_SLOT}" ]] || return 1; fi
  fi
  sp_ver_matches "${A_OP}" "${A_VER}" "${ver}"
}

# ---------------------------------------------------------------- ebuilds --
declare -A SP_META_DONE=() SP_M_SLOT=() SP_M_KEYWORDS=() SP_M_IUSE=() SP_M_RDEPEND=() SP_M_DEPEND=() SP_M_EAPI=()

# sp_ebuild_vars PATH: source the ebuild in a subshell (variables only) and print KEY<TAB>value
sp_ebuild_vars() {
  local path=$1
  (
    set +e +u
    f=${path##*/}; f=${f%.ebuild}
    CATEGORY=$(basename "$(dirname "$(dirname "${path}")")")
    PN=$(basename "$(dirname "${path}")")
    PVR=${f#"${PN}"-}; PV=$(sp_strip_rev "${PVR}"); PR=r0
    [[ ${PVR} == *-r[0-9]* ]] && PR=${PVR##*-}
    P=${PN}-${PV}; PF=${PN}-${PVR}
    inherit() { :; }
    EAPI="" SLOT="" KEYWORDS="" IUSE="" RDEPEND="" DEPEND="" BDEPEND=""
    # shellcheck disable=SC1090
    . "${path}" >/dev/null 2>&1
    set -f
    for k in EAPI SLOT KEYWORDS IUSE RDEPEND DEPEND BDEPEND; do
      # shellcheck disable=SC2116,SC2086  # word-split on purpose: one line per variable
      printf '%s\t%s\n' "${k}" "$(echo ${!k})"
    done
  )
}

sp_load_meta() {
  local path=$1 k v
  [[ -n ${SP_META_DONE[${path}]:-} ]] && return 0
  while IFS=$'\t' read -r k v; do
    case "${k}" in
      EAPI) SP_M_EAPI[${path}]=${v} ;;
      SLOT) SP_M_SLOT[${path}]=${v:-0} ;;
      KEYWORDS) SP_M_KEYWORDS[${path}]=${v} ;;
      IUSE) SP_M_IUSE[${path}]=${v} ;;
      RDEPEND) SP_M_RDEPEND[${path}]=${v} ;;
      DEPEND|BDEPEND) SP_M_DEPEND[${path}]="${SP_M_DEPEND[${path}]:-} ${v}" ;;
    esac
  done < <(sp_ebuild_vars "${path}")
  [[ ${SP_M_SLOT[${path}]:-} == */* ]] || SP_M_SLOT[${path}]="${SP_M_SLOT[${path}]:-0}/${SP_M_SLOT[${path}]:-0}"
  SP_META_DONE[${path}]=1
}

# sp_ebuilds CP -> "repo<TAB>version<TAB>path" lines
sp_ebuilds() {
  local cp=$1 repo d e v pn=${1#*/}
  for repo in "${SP_REPOS[@]}"; do
    d="$(sp_repo_dir "${repo}")/${cp}"
    [[ -d ${d} ]] || continue
    for e in "${d}/${pn}"-*.ebuild; do
      [[ -f ${e} ]] || continue
      v=${e##*/}; v=${v%.ebuild}; v=${v#"${pn}"-}
      printf '%s\t%s\t%s\n' "${repo}" "${v}" "${e}"
    done
  done
}

# ------------------------------------------------------------ config files --
# Profile files (coreos-overlay/profiles/coreos/base/, then .../<arch>/) and the board's /etc/portage/<name>
# (file or directory), comments stripped.
sp_config_lines() {
  local name=$1 f
  local prof
  prof="$(sp_repo_dir coreos-overlay)/profiles/coreos"
  for f in "${prof}/base/${name}" "${prof}/${ARCH}/${name}" "${prof}/${ARCH}/generic/${name}"; do
    [[ -f ${f} ]] && sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "${f}"
  done
  f="${BOARD_ROOT}/etc/portage/${name}"
  if [[ -d ${f} ]]; then
    find "${f}" -type f -o -type l | LC_ALL=C sort | while read -r x; do sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "${x}"; done
  elif [[ -f ${f} ]]; then
    sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "${f}"
  fi
}

sp_init_config() {
  mapfile -t SP_MASK < <(sp_config_lines package.mask)
  mapfile -t SP_UNMASK < <(sp_config_lines package.unmask)
  mapfile -t SP_ACCEPT_KW < <(sp_config_lines package.accept_keywords)
  mapfile -t SP_PKG_USE < <(sp_config_lines package.use)
}

# sp_mask_reasons CPV SLOT REPO PATH -> portage mask reasons ("package.mask", "~amd64 keyword", ...)
sp_mask_reasons() {
  local cpv=$1 slot=$2 repo=$3 path=$4 line masked=0 kw accepted
  local -a reasons=()
  for line in "${SP_MASK[@]}"; do
    line=${line%% *}
    [[ ${line} == -* ]] && continue
    sp_atom_matches "${line}" "${cpv}" "${slot}" "${repo}" && masked=1
  done
  for line in "${SP_UNMASK[@]}"; do
    sp_atom_matches "${line%% *}" "${cpv}" "${slot}" "${repo}" && masked=0
  done
  [[ ${masked} == 1 ]] && reasons+=("package.mask")
  kw=" ${SP_M_KEYWORDS[${path}]} "
  accepted=" ${ARCH} "
  for line in "${SP_ACCEPT_KW[@]}"; do
    read -r -a w <<< "${line}"
    if sp_atom_matches "${w[0]}" "${cpv}" "${slot}" "${repo}"; then
      if [[ ${#w[@]} -eq 1 ]]; then accepted+="~${ARCH} "; else accepted+="${w[*]:1} "; fi
    fi
  done
  if [[ ${kw} != *" ${ARCH} "* ]]; then
    if [[ ${kw} == *" ~${ARCH} "* ]]; then
      [[ ${accepted} == *" ~${ARCH} "* || ${accepted} == *" ** "* ]] || reasons+=("~${ARCH} keyword")
    elif [[ ${accepted} != *" ** "* ]]; then
      reasons+=("missing keyword")
    fi
  fi
  printf '%s\n' "${reasons[@]}"
}

# sp_use PATH CP -> enabled USE flags (sorted), from IUSE defaults, profile/board package.use and env USE
sp_use() {
  local path=$1 cp=$2 f line
  local -A on=() in_iuse=()
  for f in ${SP_M_IUSE[${path}]}; do
    case "${f}" in
      +*) on[${f#+}]=1; in_iuse[${f#+}]=1 ;;
      -*) in_iuse[${f#-}]=1 ;;
      *) in_iuse[${f}]=1 ;;
    esac
  done
  local cpv
  cpv="${cp}-$(basename "${path}" .ebuild | sed "s/^${cp#*/}-//")"
  apply_flags() {
    local fl
    for fl in "$@"; do
      case "${fl}" in
        -\*) on=() ;;
        -*) unset "on[${fl#-}]" ;;
        *) on[${fl}]=1 ;;
      esac
    done
  }
  for line in "${SP_PKG_USE[@]}"; do
    read -r -a w <<< "${line}"
    sp_atom_matches "${w[0]}" "${cpv}" "${SP_M_SLOT[${path}]}" "" && apply_flags "${w[@]:1}"
  done
  # shellcheck disable=SC2086
  apply_flags ${USE:-}
  for f in "${!on[@]}"; do
    [[ -n ${in_iuse[${f}]:-} ]] && echo "${f}"
  done | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//'
}

# sp_dep_atoms "DEPSTRING" "USE" -> atoms (USE/arch conditionals evaluated, || ( ) first choice, no blockers)
sp_dep_atoms() {
  local - ; set -f
  local dep=$1 use=" $2 ${ARCH} " tok
  local -a stack=(1) anyof=()
  local active=1 skip_anyof=0
  for tok in ${dep}; do
    case "${tok}" in
      *\?)
        local flag=${tok%\?} want=1
        [[ ${flag} == !* ]] && { flag=${flag#!}; want=0; }
        local have=0
        [[ ${use} == *" ${flag} "* ]] && have=1
        stack+=("${active}")
        if [[ ${active} == 1 && ${have} == "${want}" ]]; then active=1; else active=0; fi
        anyof+=(0)
        ;;
      "||") stack+=("${active}"); anyof+=(1); skip_anyof=1 ;;
      "(")
        if [[ ${skip_anyof} == 1 ]]; then skip_anyof=0; SP_ANYOF_TAKEN=0; fi ;;
      ")")
        active=${stack[-1]}; unset 'stack[-1]'; unset 'anyof[-1]' ;;
      !*) ;;
      *)
        [[ ${active} == 1 ]] || continue
        if [[ ${#anyof[@]} -gt 0 && ${anyof[-1]} == 1 ]]; then
          [[ ${SP_ANYOF_TAKEN:-0} == 1 ]] && continue
          SP_ANYOF_TAKEN=1
        fi
        echo "${tok}"
        ;;
    esac
  done
}

# ------------------------------------------------------------- resolution --
declare -A SP_SEL_PATH=() SP_SEL_VER=() SP_SEL_REPO=() SP_SEL_USE=() SP_VISITING=()
SP_ORDER=()

sp_masked_error() {
  local atom=$1; shift
  {
    echo
    echo "!!! All ebuilds that could satisfy \"${atom}\" have been masked."
    echo "!!! One of the following masked packages is required to complete your request:"
    printf -- '- %s\n' "$@"
    echo
    echo "For more information, see the MASKED PACKAGES section in the emerge"
    echo "man page or refer to the Gentoo Handbook."
    echo
  } >&2
  exit 1
}

# sp_resolve ATOM: select the best visible ebuild for ATOM and (depth first) its DEPEND/RDEPEND
sp_resolve() {
  local atom=$1 cp
  sp_atom_parse "${atom}"
  cp=${A_CP}
  if [[ -n ${SP_SEL_PATH[${cp}]:-} || -n ${SP_VISITING[${cp}]:-} ]]; then
    return 0
  fi
  local repo ver path best_ver="" best_path="" best_repo="" c
  local -a masked=()
  local found=0
  while IFS=$'\t' read -r repo ver path; do
    sp_load_meta "${path}"
    sp_atom_matches "${atom}" "${cp}-${ver}" "${SP_M_SLOT[${path}]}" "${repo}" || continue
    found=1
    local reasons
    reasons=$(sp_mask_reasons "${cp}-${ver}" "${SP_M_SLOT[${path}]}" "${repo}" "${path}" | paste -sd, | sed 's/,/, /g')
    if [[ -n ${reasons} ]]; then
      masked+=("${cp}-${ver}::${repo} (masked by: ${reasons})")
      continue
    fi
    if [[ -z ${best_ver} ]]; then
      best_ver=${ver} best_path=${path} best_repo=${repo}
    else
      c=$(sp_vercmp "${ver}" "${best_ver}")
      if [[ ${c} == 1 ]]; then best_ver=${ver} best_path=${path} best_repo=${repo}; fi
    fi
  done < <(sp_ebuilds "${cp}")
  if [[ -z ${best_ver} ]]; then
    if [[ ${found} == 1 ]]; then
      sp_masked_error "${atom}" "${masked[@]}"
    fi
    printf '\nemerge: there are no ebuilds to satisfy "%s".\n\n' "${atom}" >&2
    exit 1
  fi
  SP_VISITING[${cp}]=1
  SP_SEL_PATH[${cp}]=${best_path}
  SP_SEL_VER[${cp}]=${best_ver}
  SP_SEL_REPO[${cp}]=${best_repo}
  SP_SEL_USE[${cp}]=$(sp_use "${best_path}" "${cp}")
  local d
  while read -r d; do
    [[ -n ${d} ]] && sp_resolve "${d}"
  done < <(sp_dep_atoms "${SP_M_DEPEND[${best_path}]:-} ${SP_M_RDEPEND[${best_path}]:-}" "${SP_SEL_USE[${cp}]}")
  SP_ORDER+=("${cp}")
}

# sp_bound_rdepend CP -> the evaluated RDEPEND atoms with ':=' bound to the selected SLOT/SUBSLOT
# (what portage records in the vdb and the Packages index)
sp_bound_rdepend() {
  local cp=$1 path=${SP_SEL_PATH[$1]} d dcp
  while read -r d; do
    [[ -n ${d} ]] || continue
    if [[ ${d} == *:= || ${d} == *:=\[* ]]; then
      sp_atom_parse "${d}"; dcp=${A_CP}
      d="${d%%:=*}:${SP_M_SLOT[${SP_SEL_PATH[${dcp}]}]}="
    fi
    echo "${d}"
  done < <(sp_dep_atoms "${SP_M_RDEPEND[${path}]:-}" "${SP_SEL_USE[${cp}]}") | tr '\n' ' ' | sed 's/ $//'
}
sp_bindings() { tr ' ' '\n' <<< "$1" | grep -E ':[^ ]+=$' | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//'; }

# --------------------------------------------------------------- binpkgs --
# sp_index_lookup PACKAGES_FILE CPV -> "USE^_RDEPEND^_PATH^_SLOT" (\037-separated) of the entry, if any
sp_index_lookup() {
  [[ -f $1 ]] || return 0
  awk -v want="$2" '
    BEGIN { RS=""; FS="\n" }
    {
      cpv=""; use=""; rdep=""; path=""; slot="";
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^CPV: /) cpv = substr($i, 6)
        else if ($i ~ /^USE: /) use = substr($i, 6)
        else if ($i ~ /^RDEPEND: /) rdep = substr($i, 10)
        else if ($i ~ /^PATH: /) path = substr($i, 7)
        else if ($i ~ /^SLOT: /) slot = substr($i, 7)
      }
      if (cpv == want) { printf "%s\037%s\037%s\037%s\n", use, rdep, path, slot; exit }
    }' "$1"
}

# sp_index_best PACKAGES_FILE ATOM -> "CPV\037RDEPEND" of the best binpkg entry matching ATOM (version rules of
# sp_atom_matches, highest version wins), nothing when there is none: what `emerge --usepkgonly` selects from, with
# the dependencies the binary package recorded (not those of today's ebuild)
sp_index_best() {
  [[ -f $1 ]] || return 0
  local atom=$2 cpv rdep slot best="" best_rdep="" ver best_ver=""
  sp_atom_parse "${atom}"
  local cp=${A_CP}
  while IFS=$'\037' read -r cpv rdep slot; do
    [[ ${cpv} == "${cp}"-[0-9]* ]] || continue
    ver=${cpv#"${cp}"-}
    sp_atom_matches "${atom}" "${cpv}" "${slot:-0/0}" "" || continue
    if [[ -z ${best} || $(sp_vercmp "${ver}" "${best_ver}") == 1 ]]; then
      best=${cpv} best_ver=${ver} best_rdep=${rdep}
    fi
  done < <(awk 'BEGIN { RS=""; FS="\n" }
      NR > 1 { cpv=""; rdep=""; slot=""
               for (i = 1; i <= NF; i++) {
                 if ($i ~ /^CPV: /) cpv = substr($i, 6)
                 else if ($i ~ /^RDEPEND: /) rdep = substr($i, 10)
                 else if ($i ~ /^SLOT: /) slot = substr($i, 7)
               }
               if (cpv != "") printf "%s\037%s\037%s\n", cpv, rdep, slot }' "$1")
  [[ -n ${best} ]] && printf '%s\037%s\n' "${best}" "${best_rdep}"
  return 0
}

# sp_index_update PKGDIR CPV REPO SLOT USE RDEPEND: (re)write the Packages entry of CPV; entries sorted by CPV
sp_index_update() {
  local pkgdir=$1 cpv=$2 repo=$3 slot=$4 use=$5 rdep=$6
  local idx="${pkgdir}/Packages" f="${pkgdir}/${cpv}.gpkg.tar" tmp n
  tmp=$(mktemp)
  # one line per entry (fields joined by \001), the header block dropped, CPV's old entry dropped
  if [[ -f ${idx} ]]; then
    awk -v want="${cpv}" 'BEGIN { RS=""; FS="\n" }
      NR > 1 { keep = 1; line = ""
               for (i = 1; i <= NF; i++) { if ($i == "CPV: " want) keep = 0; line = line (i > 1 ? "\001" : "") $i }
               if (keep) print line }' "${idx}" > "${tmp}"
  fi
  {
    echo "BUILD_ID: 1"
    echo "BUILD_TIME: ${STANDIN_EPOCH}"
    echo "CPV: ${cpv}"
    echo "DEFINED_PHASES: install"
    echo "EAPI: 8"
    echo "MD5: $(md5sum < "${f}" | cut -d' ' -f1)"
    echo "PATH: ${cpv}.gpkg.tar"
    if [[ -n ${rdep} ]]; then echo "RDEPEND: ${rdep}"; fi
    echo "REPO: ${repo}"
    echo "SHA1: $(sha1sum < "${f}" | cut -d' ' -f1)"
    echo "SIZE: $(stat -c %s "${f}")"
    if [[ ${slot} != 0/0 ]]; then echo "SLOT: ${slot}"; fi
    echo "USE: ${use}"
  } | paste -sd $'\001' >> "${tmp}"
  n=$(wc -l < "${tmp}")
  {
    echo "ARCH: ${ARCH}"
    echo "CBUILD: x86_64-pc-linux-gnu"
    echo "CHOST: $(get_board_chost "${BOARD}")"
    echo "PACKAGES: ${n}"
    echo "PROFILE: $(get_board_profile "${BOARD}")"
    echo "TIMESTAMP: ${STANDIN_EPOCH}"
    echo "VERSION: 0"
    awk -F '\001' '{ for (i = 1; i <= NF; i++) if ($i ~ /^CPV: /) k = substr($i, 6); print k "\t" $0 }' "${tmp}" \
      | LC_ALL=C sort -t $'\t' -k1,1 | cut -f2- | while IFS= read -r line; do
          echo
          tr '\001' '\n' <<< "${line}"
        done
    echo
  } > "${idx}.new"
  mv "${idx}.new" "${idx}"
  rm -f "${tmp}"
}

# sp_write_gpkg PKGDIR CAT PF REPO IMAGE_DIR META_DIR: GLEP 78 layout (gpkg-1, metadata + image tarballs)
sp_write_gpkg() {
  local pkgdir=$1 cat=$2 pf=$3 image=$4 meta=$5 work
  work=$(mktemp -d)
  mkdir -p "${work}/${pf}"
  : > "${work}/${pf}/gpkg-1"
  standin_tar "${work}/meta.tar" "${meta}"
  standin_tar "${work}/image.tar" "${image}"
  zstd -q -19 -f "${work}/meta.tar" -o "${work}/${pf}/metadata.tar.zst"
  zstd -q -19 -f "${work}/image.tar" -o "${work}/${pf}/image.tar.zst"
  mkdir -p "${pkgdir}/${cat}"
  standin_tar "${pkgdir}/${cat}/${pf}.gpkg.tar" "${work}" "${pf}/gpkg-1" "${pf}/metadata.tar.zst" "${pf}/image.tar.zst"
  rm -rf "${work}"
}

# sp_http_get URL DEST: fetch URL like portage's FETCHCOMMAND, from the builder's network. The real SDK container has
# --network host; the stand-in's has none, so the request goes through run_sdk_container's relay in the builder's
# namespace (STANDIN_NET_SOCK, build_library/standin_netfwd.py). In host mode curl runs directly, to where the
# relay's own rule allows (standin_netfwd.py --check: 127.0.0.0/8, or an on-link subnet of a namespace without a
# default route; tests never send traffic out).
sp_http_get() {
  local url=$1 dest=$2
  if [[ -n ${STANDIN_NET_SOCK:-} ]]; then
    curl -fsS --max-time 120 --unix-socket "${STANDIN_NET_SOCK}" -o "${dest}" -- "${url}"
  elif [[ ${STANDIN_HOST_MODE:-0} == 1 ]]; then
    python3 "${BUILD_LIBRARY_DIR}/standin_netfwd.py" --check "${url}" || return 1
    curl -fsS --max-time 120 -o "${dest}" -- "${url}"
  else
    echo "stand-in: no network for ${url} (run_sdk_container started no relay)" >&2
    return 1
  fi
}

# sp_remote_binhosts: one local directory per PORTAGE_BINHOST entry (--getbinpkg). file:// (or plain path)
# entries are used in place; for http:// entries the remote Packages index is fetched into a directory under
# ${SP_REMOTE_DIR} (its URL in .url, packages fetched on use like bintree.gettbz2). An index that cannot be
# fetched is reported like portage's bintree._populate_remote ("!!! Error fetching binhost package info from")
# and that binhost is left out.
sp_remote_binhosts() {
  local u n=0 d
  for u in ${PORTAGE_BINHOST:-}; do
    case "${u}" in
      file://*) standin_path "${u#file://}" ;;
      /*) standin_path "${u}" ;;
      http://*)
        n=$((n + 1))
        d="${SP_REMOTE_DIR}/${n}"
        mkdir -p "${d}"
        printf '%s\n' "${u%/}" > "${d}/.url"
        if sp_http_get "${u%/}/Packages" "${d}/Packages" 2>"${d}/.err"; then
          echo "${d}"
        else
          rm -f "${d}/Packages"
          printf "\n\n!!! Error fetching binhost package info from '%s'\n!!! %s\n\n" "${u%/}" "$(head -n1 "${d}/.err")" >&2
        fi
        ;;
    esac
  done
}

# sp_binhost_has BINHOST_DIR PATH: the package file is there, or (remote binhost) fetched into it now
sp_binhost_has() {
  local d=$1 p=$2
  [[ -f ${d}/${p} ]] && return 0
  [[ -f ${d}/.url ]] || return 1
  mkdir -p "$(dirname "${d}/${p}")"
  sp_http_get "$(cat "${d}/.url")/${p}" "${d}/${p}" || { rm -f "${d}/${p}"; return 1; }
}

# ----------------------------------------------------------------- builds --
# sp_patch_p1 FILE: `patch -p1` like eapply_user; `git apply -p1` (same -p1 semantics) where the SDK image
# has no patch(1) (the stand-in image is debootstrap minbase + git)
sp_patch_p1() {
  if command -v patch >/dev/null; then
    patch -p1 --no-backup-if-mismatch -s < "$1"
  else
    git apply -p1 --whitespace=nowarn "$1"
  fi
}

# sp_build_source CP CPV REPO SLOT USE RDEPEND -> writes the binpkg + index entry
sp_build_source() {
  local cp=$1 cpv=$2 repo=$3 slot=$4 use=$5 rdep=$6
  local path=${SP_SEL_PATH[${cp}]} cat=${cp%%/*} pn=${cp#*/} pf=${cpv#*/}
  local work
  work=$(mktemp -d)
  mkdir -p "${work}/image" "${work}/meta" "${work}/S"
  local filesdir
  filesdir="$(dirname "${path}")/files"
  [[ -d ${filesdir}/src ]] && cp -a "${filesdir}/src/." "${work}/S/"
  # user patches like eapply_user: ${ROOT}/etc/portage/patches -> coreos-overlay/coreos/user-patches
  # (vendor setup_board:265-266); dirs ${CATEGORY}/{${PN},${P},${PF}}, *.patch|*.diff, by file name
  local pdir="${BOARD_ROOT}/etc/portage/patches" p
  [[ -d ${pdir} ]] || pdir="$(sp_repo_dir coreos-overlay)/coreos/user-patches"
  local pv=${pf#"${pn}"-}
  pv=$(sp_strip_rev "${pv}")
  local -A patches=()
  for p in "${pdir}/${cat}/${pn}"/*.{patch,diff} "${pdir}/${cat}/${pn}-${pv}"/*.{patch,diff} "${pdir}/${cat}/${pf}"/*.{patch,diff}; do
    [[ -f ${p} ]] && patches[${p##*/}]=${p}
  done
  local name
  while read -r name; do
    [[ -n ${name} ]] || continue
    echo " * Applying ${name} ..."
    if ! (cd "${work}/S" && sp_patch_p1 "${patches[${name}]}"); then
      echo " * ERROR: ${cpv}::${repo} failed (prepare phase):" >&2
      echo " *   patch -p1 failed with ${patches[${name}]}" >&2
      rm -rf "${work}"
      exit 1
    fi
  done < <(printf '%s\n' "${!patches[@]}" | LC_ALL=C sort)
  [[ ${#patches[@]} -gt 0 ]] && echo " * User patches applied."
  (
    set -e
    S="${work}/S" D="${work}/image" FILESDIR="${filesdir}" CATEGORY=${cat} PN=${pn} PF=${pf}
    PVR=${pf#"${pn}"-}; PV=$(sp_strip_rev "${PVR}"); P=${PN}-${PV}
    inherit() { :; }
    # shellcheck disable=SC1090
    . "${path}"
    if declare -F src_install >/dev/null; then
      cd "${S}"
      src_install
    elif [[ -n $(ls -A "${S}") ]]; then
      mkdir -p "${D}/usr/share/${PN}"
      cp -a "${S}/." "${D}/usr/share/${PN}/"
    fi
  )
  printf '%s\n' "${cat}" > "${work}/meta/CATEGORY"
  printf '%s\n' "${pf}" > "${work}/meta/PF"
  printf '%s\n' "${repo}" > "${work}/meta/repository"
  printf '%s\n' "${slot}" > "${work}/meta/SLOT"
  printf '%s\n' "${use}" > "${work}/meta/USE"
  printf '%s\n' "${rdep}" > "${work}/meta/RDEPEND"
  printf '%s\n' "$(get_board_chost "${BOARD}")" > "${work}/meta/CHOST"
  cp "${path}" "${work}/meta/${pf}.ebuild"
  # time per package built from source: STANDIN_PKG_BUILD_SECONDS or .standin/pkg_build_seconds (benches)
  local secs=${STANDIN_PKG_BUILD_SECONDS:-}
  if [[ -z ${secs} && -s ${STANDIN_CTL_DIR}/pkg_build_seconds ]]; then
    secs=$(tr -d ' \n\t' < "${STANDIN_CTL_DIR}/pkg_build_seconds")
  fi
  if [[ -n ${secs} && ${secs} != 0 ]]; then sleep "${secs}"; fi
  sp_write_gpkg "${PKGDIR_HOST}" "${cat}" "${pf}" "${work}/image" "${work}/meta"
  sp_index_update "${PKGDIR_HOST}" "${cpv}" "${repo}" "${slot}" "${use}" "${rdep}"
  rm -rf "${work}"
}

# sp_install_binpkg CPV: merge the binpkg from PKGDIR into the install root (SP_ROOT, default BOARD_ROOT: emerge's
# --root) + its vdb (replacing the installed one)
sp_install_binpkg() {
  local cpv=$1 cat=${1%%/*} pf=${1#*/} t iroot=${SP_ROOT:-${BOARD_ROOT}}
  t=$(mktemp -d)
  tar -C "${t}" -xf "${PKGDIR_HOST}/${cpv}.gpkg.tar"
  mkdir -p "${t}/meta" "${t}/image"
  zstd -q -d -c "${t}/${pf}/metadata.tar.zst" | tar -C "${t}/meta" -xf -
  zstd -q -d -c "${t}/${pf}/image.tar.zst" | tar -C "${t}/image" -xf -
  local cp old
  cp=${SP_CUR_CP}
  for old in "${iroot}/var/db/pkg/${cat}/${cp#*/}"-[0-9]*; do
    [[ -d ${old} ]] || continue
    if [[ -f ${old}/CONTENTS ]]; then
      awk '$1 == "obj" { print $2 }' "${old}/CONTENTS" | while read -r f; do rm -f "${iroot}${f}"; done
    fi
    rm -rf "${old}"
  done
  cp -a "${t}/image/." "${iroot}/"
  local vdb="${iroot}/var/db/pkg/${cat}/${pf}"
  mkdir -p "${vdb}"
  cp -a "${t}/meta/." "${vdb}/"
  (cd "${t}/image" && find . -mindepth 1 \( -type f -o -type l \) | LC_ALL=C sort | while read -r f; do
     if [[ -f ${f} && ! -L ${f} ]]; then echo "obj ${f#.} $(md5sum < "${f}" | cut -d' ' -f1) ${STANDIN_EPOCH}"; else echo "sym ${f#.}"; fi
   done) > "${vdb}/CONTENTS"
  rm -rf "${t}"
}

# sp_emerge ATOM...: resolve, plan and merge (the stand-in `emerge-<board> ${EMERGE_FLAGS[@]} ATOM...`)
# Modes (environment): SP_ROOT install root (--root; config stays the board's), SP_ONLYDEPS=1 (--onlydeps: the
# requested packages themselves are left out), SP_BUILDPKGONLY=1 (--buildpkgonly).
sp_emerge() {
  local a iroot=${SP_ROOT:-${BOARD_ROOT}}
  local -a roots=()
  local -A root_cp=()
  for a in "$@"; do
    if [[ ${a} == @system ]]; then
      while read -r a; do roots+=("${a#\*}"); done < <(sp_config_lines packages | grep '^\*')
    elif [[ ${a} == @* ]]; then
      printf '\nemerge: there are no sets to satisfy '"'"'%s'"'"'.\n' "${a#@}" >&2
      exit 1
    else
      roots+=("${a}")
    fi
  done
  echo "Calculating dependencies... done!"
  for a in "${roots[@]}"; do sp_resolve "${a}"; sp_atom_parse "${a}"; root_cp[${A_CP}]=1; done

  local -a plan_cp=() plan_kind=()
  SP_N_NEW=0 SP_N_UP=0 SP_N_DOWN=0 SP_N_RE=0 SP_N_BIN=0
  local cp cpv ver repo slot use rdep binds inst_dir kind hit
  declare -gA SP_PLAN_RDEP=() SP_PLAN_SLOT=()
  local -a remotes=()
  SP_REMOTE_DIR=$(mktemp -d)
  # shellcheck disable=SC2064  # the directory is known now; build_packages runs sp_emerge in a subshell
  trap "rm -rf '${SP_REMOTE_DIR}'" EXIT
  if [[ ${SP_GETBINPKG:-0} == 1 ]]; then mapfile -t remotes < <(sp_remote_binhosts); fi
  for cp in "${SP_ORDER[@]}"; do
    ver=${SP_SEL_VER[${cp}]} repo=${SP_SEL_REPO[${cp}]} cpv="${cp}-${ver}"
    slot=${SP_M_SLOT[${SP_SEL_PATH[${cp}]}]}
    use=${SP_SEL_USE[${cp}]}
    rdep=$(sp_bound_rdepend "${cp}")
    binds=$(sp_bindings "${rdep}")
    SP_PLAN_RDEP[${cp}]=${rdep}
    SP_PLAN_SLOT[${cp}]=${slot}
    [[ ${SP_ONLYDEPS:-0} == 1 && -n ${root_cp[${cp}]:-} ]] && continue
    inst_dir="${iroot}/var/db/pkg/${cpv}"
    if [[ -d ${inst_dir} ]] && [[ $(cat "${inst_dir}/USE" 2>/dev/null) == "${use}" ]] \
       && [[ $(sp_bindings "$(cat "${inst_dir}/RDEPEND" 2>/dev/null)") == "${binds}" ]]; then
      continue   # --update: same version, same USE (--newuse), same slot-operator bindings
    fi
    kind=source
    if [[ ${SP_USEPKG:-1} == 1 ]] && ! sp_excluded "${cp}"; then
      local u r p s
      hit=$(sp_index_lookup "${PKGDIR_HOST}/Packages" "${cpv}")
      if [[ -n ${hit} ]]; then
        IFS=$'\037' read -r u r p s <<< "${hit}"
        if [[ ${u} == "${use}" && $(sp_bindings "${r}") == "${binds}" && -f ${PKGDIR_HOST}/${p} ]]; then kind=binary; fi
      fi
      if [[ ${kind} == source ]]; then
        local bh
        for bh in "${remotes[@]}"; do
          hit=$(sp_index_lookup "${bh%/}/Packages" "${cpv}")
          [[ -n ${hit} ]] || continue
          IFS=$'\037' read -r u r p s <<< "${hit}"
          if [[ ${u} == "${use}" && $(sp_bindings "${r}") == "${binds}" ]] && sp_binhost_has "${bh%/}" "${p}"; then
            kind="fetch:${bh%/}"
            break
          fi
        done
      fi
    fi
    if [[ ${kind} == source && ${SP_USEPKGONLY:-0} == 1 ]]; then
      printf '\nemerge: there are no binary packages to satisfy "%s".\n\n' "=${cpv}" >&2
      exit 1
    fi
    plan_cp+=("${cp}"); plan_kind+=("${kind}")
    # counts for the "Total:" line (resolver/output_helpers.py PackageCounters)
    local old_ver="" od
    for od in "${iroot}/var/db/pkg/${cp}"-[0-9]*; do [[ -d ${od} ]] && old_ver=${od##*/"${cp#*/}"-}; done
    if [[ -z ${old_ver} ]]; then SP_N_NEW=$((SP_N_NEW + 1))
    else
      case "$(sp_vercmp "${ver}" "${old_ver}")" in
        1) SP_N_UP=$((SP_N_UP + 1)) ;;
        -1) SP_N_DOWN=$((SP_N_DOWN + 1)) ;;
        *) SP_N_RE=$((SP_N_RE + 1)) ;;
      esac
    fi
    [[ ${kind} != source ]] && SP_N_BIN=$((SP_N_BIN + 1))
  done

  local n=0 m=${#plan_cp[@]} i root="/build/${BOARD}/"
  sp_total_line "${m}"
  [[ ${m} -eq 0 ]] && return 0
  for i in "${!plan_cp[@]}"; do
    n=$((n + 1))
    cp=${plan_cp[${i}]} kind=${plan_kind[${i}]}
    ver=${SP_SEL_VER[${cp}]} repo=${SP_SEL_REPO[${cp}]} cpv="${cp}-${ver}"
    SP_CUR_CP=${cp}
    case "${kind}" in
      source)
        echo ">>> Emerging (${n} of ${m}) ${cpv}::${repo} for ${root}"
        sp_build_source "${cp}" "${cpv}" "${repo}" "${SP_PLAN_SLOT[${cp}]}" "${SP_SEL_USE[${cp}]}" "${SP_PLAN_RDEP[${cp}]}"
        ;;
      fetch:*)
        local bh=${kind#fetch:}
        echo ">>> Emerging binary (${n} of ${m}) ${cpv}::${repo} for ${root}"
        mkdir -p "${PKGDIR_HOST}/${cpv%%/*}"
        cp "${bh}/${cpv}.gpkg.tar" "${PKGDIR_HOST}/${cpv}.gpkg.tar"
        sp_index_update "${PKGDIR_HOST}" "${cpv}" "${repo}" "${SP_PLAN_SLOT[${cp}]}" "${SP_SEL_USE[${cp}]}" "${SP_PLAN_RDEP[${cp}]}"
        ;;
      binary)
        echo ">>> Emerging binary (${n} of ${m}) ${cpv}::${repo} for ${root}"
        ;;
    esac
    [[ ${SP_BUILDPKGONLY:-0} == 1 ]] && continue
    echo ">>> Installing (${n} of ${m}) ${cpv}::${repo} to ${root}"
    sp_install_binpkg "${cpv}"
    echo ">>> Completed (${n} of ${m}) ${cpv}::${repo} to ${root}"
  done
  echo ">>> Jobs: ${m} of ${m} complete"
}

# sp_total_line M: "Total: ..." like resolver/output_helpers.py:105-150 (PackageCounters.__str__)
sp_total_line() {
  local m=$1 line
  local -a d=()
  line="Total: ${m} package"
  [[ ${m} -ne 1 ]] && line+="s"
  if [[ ${SP_N_UP} -gt 0 ]]; then d+=("${SP_N_UP} upgrade"); [[ ${SP_N_UP} -gt 1 ]] && d[-1]+="s"; fi
  if [[ ${SP_N_DOWN} -gt 0 ]]; then d+=("${SP_N_DOWN} downgrade"); [[ ${SP_N_DOWN} -gt 1 ]] && d[-1]+="s"; fi
  [[ ${SP_N_NEW} -gt 0 ]] && d+=("${SP_N_NEW} new")
  if [[ ${SP_N_RE} -gt 0 ]]; then d+=("${SP_N_RE} reinstall"); [[ ${SP_N_RE} -gt 1 ]] && d[-1]+="s"; fi
  if [[ ${SP_N_BIN} -gt 0 ]]; then
    if [[ ${SP_N_BIN} -gt 1 ]]; then d+=("${SP_N_BIN} binaries"); else d+=("1 binary"); fi
  fi
  if [[ ${m} -ne 0 ]]; then
    local IFS=,
    line+=" ($(printf '%s' "${d[*]}" | sed 's/,/, /g'))"
  fi
  echo
  echo "${line}, Size of downloads: 0 KiB"
  echo
}

# --usepkg-exclude: space separated atoms (cat/pkg or pkg)
sp_excluded() {
  local cp=$1 x
  for x in ${SP_USEPKG_EXCLUDE:-}; do
    sp_atom_parse "${x}"
    [[ ${A_CP} == "${cp}" || ${A_CP} == "${cp#*/}" ]] && return 0
  done
  return 1
}

# sp_installed_closure ATOM...: "cat/pf::repo" of the installed RDEPEND closure (from the vdb)
sp_installed_closure() {
  local -A seen=()
  local -a queue=("$@")
  local a d vdb="${BOARD_ROOT}/var/db/pkg"
  while [[ ${#queue[@]} -gt 0 ]]; do
    a=${queue[0]}; queue=("${queue[@]:1}")
    sp_atom_parse "${a}"
    local cp=${A_CP} hitdir=""
    for d in "${vdb}/${cp}"-[0-9]*; do
      [[ -d ${d} ]] && hitdir=${d}
    done
    [[ -n ${hitdir} ]] || continue
    local cpv="${cp%%/*}/${hitdir##*/}"
    [[ -n ${seen[${cpv}]:-} ]] && continue
    seen[${cpv}]="$(cat "${hitdir}/repository" 2>/dev/null || echo coreos-overlay)"
    for d in $(cat "${hitdir}/RDEPEND" 2>/dev/null); do queue+=("${d}"); done
  done
  for a in "${!seen[@]}"; do echo "${a}::${seen[${a}]}"; done | LC_ALL=C sort
}
