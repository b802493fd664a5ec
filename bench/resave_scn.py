"""Re-save network files in the current format (load -> save).

Format-1 files (earlier releases) hashed only their arrays; re-saving one writes
format 2, whose sha256 also covers the manifest. The arrays and every manifest
field are kept as they are, so decisions do not change; ``model_sha256`` does.
A file with a calibration table also records the operating point it recommends
(``meta["operating_point"]``, see spikecast.ext.core.calibration), which is what
``spikecast run`` uses with no flags.

    python bench/resave_scn.py bench/models/*.scn runtime/data/nmnist.scn
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from spikecast.ext.core.calibration import META_KEY, Calibration
from spikecast.ext.core.network import UnverifiedManifestWarning, load_network


def main(paths: list[str]) -> int:
    for name in paths:
        path = Path(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnverifiedManifestWarning)
            net = load_network(path)
        before = net.file_version
        if net.calibration is not None:
            rec = Calibration(net.calibration).recommend()
            net = net.with_(meta={**net.meta, META_KEY: rec.as_dict()})
        net.save(path)
        again = load_network(path)
        if again.sha256 != net.sha256 or again.manifest() != net.manifest():
            raise SystemExit(f"{path}: the re-saved file does not load back identically")
        point = again.meta.get(META_KEY)
        print(f"{path}: format {before} -> {again.file_version}, sha256 {again.sha256}, "
              f"recommended {point and {k: point[k] for k in ('tau', 't_min', 't_max')}}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
