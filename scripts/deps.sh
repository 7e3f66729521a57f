# Sourced by the other scripts: makes sure the Debian 12 packages the project needs are installed.
# As root it installs what is missing with apt-get; otherwise it prints the exact command and stops.

KWS_PACKAGES=(
  cmake ninja-build g++ pkg-config ccache
  libboost1.81-dev libssl-dev openssl
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libspdlog-dev libfmt-dev libjemalloc-dev prometheus-cpp-dev
  librdkafka-dev kcat python3-kafka python3-confluent-kafka
  tinyproxy-bin socat nftables
  haproxy
)

kws_ensure_packages() {
  local missing=() p
  for p in "${KWS_PACKAGES[@]}" "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "kws: missing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || { echo "kws: apt-get update failed" >&2; return 1; }
    apt-get install -y -qq --no-install-recommends "${missing[@]}" || {
      echo "kws: apt-get install failed" >&2
      return 1
    }
  else
    echo "kws: run this, then try again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    return 1
  fi
}
