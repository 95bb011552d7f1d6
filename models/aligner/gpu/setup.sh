#!/bin/bash
# Device call 1: the binary, the data and the model's first part into .work/ (ignored files
# stay between calls while the machine is warm); checks that wgpu finds the GPU.
R=$PWD; W=$R/.work; mkdir -p $W; cd $W
[ -z "${SKIPDEB:-}" ] && { for f in $R/.gl/*.deb; do dpkg -x $f /; done; ldconfig; }
unxz() { xz -dc "$1" 2>/dev/null || python3 -c "import lzma,sys,shutil;shutil.copyfileobj(lzma.open(sys.argv[1]),sys.stdout.buffer)" "$1"; }
unxz $R/.dev1/sa.xz > sa && chmod +x sa
unxz $R/.dev1/data.tar.xz | tar xf -
cp $R/.dev1/model.xz.a .
nvidia-smi -L
for vk in "" /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; do
  echo "== wgpu, VK_DRIVER_FILES=$vk"
  VK_DRIVER_FILES=$vk ./sa train --backend wgpu --model /nonexistent.gguf --out /tmp/x 2>&1 | grep -v XDG | head -2
done
