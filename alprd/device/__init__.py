"""The daemon on the device: frames in, hits out over MQTT.

capture -> motion -> (alprd.read) -> track -> pipeline (hot-list match) -> record (evidence, outbox,
summary, audit) -> publish; commands come back through publish to the command registry. `daemon`
wires them (`build`) and runs the loop (`Daemon.run`).
"""
