"""core/ is built in layers (docs/architecture.md): a file includes only headers of its
own folder and of the folders its layer may use. This keeps the direction of calls
visible in the tree: the transport never includes the server or the broker, the plugin
host sees clients but not the broker, the broker sees no transport, and the codec, the
store and the HTTP parsers include nothing above them."""
import pathlib
import re
import tempfile
import unittest

CORE = pathlib.Path(__file__).resolve().parent.parent.parent / "core"

# Layer -> the other layers it may include. Keep in step with docs/architecture.md.
MAY_USE = {
    "base": set(),
    "config": {"base"},
    "mqtt": {"base"},
    "http": {"base"},
    "store": {"base"},
    "cluster": {"base", "config", "mqtt"},
    "transport": {"base", "config", "http"},
    "client": {"base", "config", "mqtt"},
    "plugin": {"base", "config", "mqtt", "client"},
    "broker": {"base", "config", "mqtt", "client", "plugin", "store", "cluster"},
    "console": {"base", "config", "mqtt", "http", "client", "plugin", "store", "cluster",
                "broker"},
    "server": {"base", "config", "mqtt", "http", "transport", "store", "client", "plugin",
               "broker", "cluster", "console"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
# Headers outside core/ that any layer may include: the plugin ABI, and plugins/common's
# plain C helpers that the core shares with the plugins and the PKI tools (the topic
# rules, the X.509 time conversion); and for the console, the Mosquitto password-file
# library (plugins/passwd) and the PKI tools' CRL writer (pki-tools/), which it reuses.
OUTSIDE = {"mqgate_plugin.h", "common/mqtt_topic.h", "common/x509_time.h", "passwd/pwfile.h",
           "pki-tools/crl_update.hpp", "pki-tools/issuer.hpp", "pki-tools/output.hpp"}


def violations(core=CORE):
    found = []
    for path in sorted(core.rglob("*")):
        if path.suffix not in (".cpp", ".hpp", ".h") or path.parent == core:
            continue
        layer = path.relative_to(core).parts[0]
        for name in INCLUDE.findall(path.read_text()):
            if name in OUTSIDE:
                continue
            target = name.split("/")[0]
            if target not in MAY_USE:
                found.append(f"{path.relative_to(core)}: includes \"{name}\", not a layer's header")
            elif target != layer and target not in MAY_USE[layer]:
                found.append(f"{path.relative_to(core)}: {layer} includes {name} ({target})")
    return found


class LayersTest(unittest.TestCase):
    def test_every_file_is_in_a_layer(self):
        loose = [p.name for p in CORE.iterdir() if p.is_file() and p.name != "meson.build"]
        self.assertEqual(loose, [], "files directly in core/: put them in a layer's folder")
        folders = {p.name for p in CORE.iterdir() if p.is_dir()}
        self.assertEqual(folders, set(MAY_USE), "core/ folders and MAY_USE disagree")

    def test_includes_point_down(self):
        self.assertEqual(violations(), [])

    def test_the_check_sees_upward_and_unknown_includes(self):
        with tempfile.TemporaryDirectory() as tmp:
            core = pathlib.Path(tmp)
            (core / "transport").mkdir()
            (core / "broker").mkdir()
            (core / "transport" / "layer.cpp").write_text(
                '#include <uv.h>\n#include "transport/stack.hpp"\n'
                '  #  include "broker/broker.hpp"\n#include "nowhere.hpp"\n')
            (core / "broker" / "ok.cpp").write_text('#include "transport/stack.hpp"\n')
            self.assertEqual(violations(core), [
                "broker/ok.cpp: broker includes transport/stack.hpp (transport)",
                "transport/layer.cpp: transport includes broker/broker.hpp (broker)",
                'transport/layer.cpp: includes "nowhere.hpp", not a layer\'s header',
            ])


if __name__ == "__main__":
    unittest.main()
