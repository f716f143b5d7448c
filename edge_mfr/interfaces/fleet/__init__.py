"""Many doors, one set of people: signed gallery bundles distributed over the MQTT broker.

``bundle`` (format, Ed25519 signature), ``keys`` (keygen, loading), ``payload`` (people as gallery files),
``transport`` (chunks and retained topics), ``publisher`` (admin host), ``follower`` (each door),
``link`` (paho clients with the device's broker settings).
"""
