"""Re-save network files in the current format (load -> save).

Format-1 files (earlier releases) hashed only their arrays; re-saving one writes
format 2, whose sha256 also covers the manifest. The arrays and every manifest
field are kept as they are, so decisions do not change; ``model_sha256`` does.

    python bench/resave_scn.py bench/models/*.scn runtime/data/nmnist.scn
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from spikecast.ext.core.network import UnverifiedManifestWarning, load_network


def main(paths: list[str]) -> int:
    for name in paths:
        path = Path(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnverifiedManifestWarning)
            net = load_network(path)
        before = net.file_version
        net.save(path)
        again = load_network(path)
        assert again.sha256 == net.sha256 and again.manifest() == net.manifest()
        print(f"{path}: format {before} -> {again.file_version}, sha256 {again.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
