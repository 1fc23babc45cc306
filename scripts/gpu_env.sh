# Source on a GPU host, after scripts/gpu_install.sh install succeeded:
#   source scripts/gpu_env.sh && python3 -m pytest -m gpu tests/gpu
# Puts Grove's GPU set ($GROVE_SITE) and the repository first on the Python path, lets onnxruntime find the CUDA 13
# libraries that come with torch, keeps Hugging Face offline. Returns non-zero (and says why) when the set is not
# installed, so `source scripts/gpu_env.sh && ...` stops there.
_grove_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export GROVE_SITE=${GROVE_SITE:-$HOME/.grove-gpu/site}
case ":${PYTHONPATH:-}:" in
  *":$GROVE_SITE:$_grove_root:"*) ;;
  *) export PYTHONPATH="$GROVE_SITE:$_grove_root${PYTHONPATH:+:$PYTHONPATH}" ;;
esac
_grove_cuda_libs=$(env -u PYTHONPATH "${PYTHON:-python3}" -c "import glob,site
print(':'.join(sorted(glob.glob(site.getsitepackages()[0]+'/nvidia/*/lib') + glob.glob(site.getsitepackages()[0]+'/nvidia/cu*/lib*'))))" 2>/dev/null)
case ":${LD_LIBRARY_PATH:-}:" in
  *":$_grove_cuda_libs:"*) ;;
  *) export LD_LIBRARY_PATH="$_grove_cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
esac
export GROVE_HOME=${GROVE_HOME:-$HOME/grove} HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
unset _grove_cuda_libs
if [ -z "${GROVE_ENV_NO_CHECK:-}" ] && [ ! -f "$GROVE_SITE/.grove-ok" ]; then
  echo "gpu_env.sh: ERROR: Grove's GPU set is not installed in $GROVE_SITE (or its checks failed):" \
       "run scripts/gpu_install.sh install (docs/gpu.md)" >&2
  return 1 2>/dev/null || exit 1
fi
