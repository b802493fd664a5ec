"""MQTT 5 properties decoded without paho's per-message table building.

paho-mqtt builds a fresh ``Properties`` object for every MQTT 5 packet it receives:
two dicts of 27 entries each, then, for every property, linear scans over the names
with ``str.replace``. For a PUBLISH carrying one subscription identifier (every
message the service receives) that was about 35 µs on the bench machine, a third of
what receiving a message costs end to end (``bench/latency.py``).

:class:`FastProperties` is the same class with the tables built once and shared
(paho never mutates them) and the name lookups precomputed. It sets the same
attributes with the same values and raises the same exception types for the same
inputs (``tests/runtime/mqtt/test_mqtt_paho_props.py`` checks every property kind,
repeats, wrong packet types and malformed buffers against paho's own class).

:func:`install` makes paho's packet decoder (``paho.mqtt._packet``, where every
received MQTT 5 packet's properties are built) use it. It is called when the
service creates its MQTT client; it changes nothing for a paho release whose
decoder does not look as expected (then paho's own class stays in use).
"""

from __future__ import annotations

from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MQTTException, Properties, VariableByteIntegers

_TEMPLATE = Properties(PacketTypes.PUBLISH)
_TYPES: list[str] = _TEMPLATE.types
_NAMES: dict[str, int] = _TEMPLATE.names
_PROPERTIES: dict[int, tuple[int, list[int]]] = _TEMPLATE.properties
#: Compressed name ("SubscriptionIdentifier") -> identifier (11), and back.
_IDENT = {name.replace(" ", ""): ident for name, ident in _NAMES.items()}
_COMPRESSED = {ident: name for name, ident in _IDENT.items()}
_SPACED = {ident: name for name, ident in _NAMES.items()}
_PRIVATE = frozenset(("packetType", "types", "names", "properties"))
_MULTIPLE = frozenset(("SubscriptionIdentifier", "UserProperty"))  # paho: identifiers 11, 38
_RANGES = {
    "ReceiveMaximum": (1, 65535),
    "TopicAlias": (1, 65535),
    "TopicAliasMaximum": (0, 65535),
    "MaximumPacketSize": (1, 268435455),
    "SubscriptionIdentifier": (1, 268435455),
}
_FLAGS = frozenset(("RequestResponseInformation", "RequestProblemInformation",
                    "PayloadFormatIndicator"))


class FastProperties(Properties):
    """paho's ``Properties`` with shared tables and precomputed name lookups."""

    def __init__(self, packetType: int) -> None:
        d = self.__dict__
        d["packetType"] = packetType
        d["types"] = _TYPES
        d["names"] = _NAMES
        d["properties"] = _PROPERTIES

    def getIdentFromName(self, compressedName: str) -> int:
        return _IDENT.get(compressedName, -1)

    def getNameFromIdent(self, identifier: int) -> str | None:
        return _SPACED.get(identifier)

    def allowsMultiple(self, compressedName: str) -> bool:
        return compressedName in _MULTIPLE

    def __setattr__(self, name: str, value: Any) -> None:
        name = name.replace(" ", "")
        if name in _PRIVATE:
            object.__setattr__(self, name, value)
            return
        ident = _IDENT.get(name)
        if ident is None:
            raise MQTTException(f"Property name must be one of {_NAMES.keys()}")
        if self.packetType not in _PROPERTIES[ident][1]:
            raise MQTTException(f"Property {name} does not apply to packet type "
                                f"{PacketTypes.Names[self.packetType]}")
        if not isinstance(value, list):
            bounds = _RANGES.get(name)
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                raise MQTTException(f"{name} property value must be in the range "
                                    f"{bounds[0]}-{bounds[1]}")
            if name in _FLAGS and value not in (0, 1):
                raise MQTTException(f"{name} property value must be 0 or 1")
        if name in _MULTIPLE:
            if not isinstance(value, list):
                value = [value]
            if name in self.__dict__:
                value = self.__dict__[name] + value
        object.__setattr__(self, name, value)

    def clear(self) -> None:
        d = self.__dict__
        for name in _IDENT:
            d.pop(name, None)

    def unpack(self, buffer: bytes) -> tuple[FastProperties, int]:
        """As paho's: properties from ``buffer``; (self, bytes used)."""
        self.clear()
        propslen, vbi_len = VariableByteIntegers.decode(buffer)
        buffer = buffer[vbi_len:]
        left = propslen
        while left > 0:
            identifier, id_len = VariableByteIntegers.decode(buffer)
            buffer = buffer[id_len:]
            left -= id_len
            value, value_len = self.readProperty(buffer, _PROPERTIES[identifier][0], left)
            buffer = buffer[value_len:]
            left -= value_len
            name = _COMPRESSED[identifier]
            if name not in _MULTIPLE and name in self.__dict__:
                raise MQTTException(f"Property '{name}' must not exist more than once")
            setattr(self, name, value)
        return self, propslen + vbi_len


def install() -> bool:
    """Make paho's packet decoder build :class:`FastProperties`; whether it does."""
    try:
        from paho.mqtt import _packet
    except ImportError:
        return False
    if getattr(_packet, "Properties", None) is Properties:
        _packet.Properties = FastProperties  # type: ignore[misc]  # replacing the class is the point
    return getattr(_packet, "Properties", None) is FastProperties
