"""HIAS iotJumpWay over MQTT: topics, payloads, system stats, commands and the component.

`edge.hias.client.HiasComponent` is the daemon component; the other modules are pure helpers.
"""
