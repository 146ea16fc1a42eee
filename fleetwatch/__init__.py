"""fleetwatch: the detection core of influx-magic.

Half-Space Trees per machine (River-exact), the views they see, the detector that scores a
fleet's frame, alert episodes and the state that carries all of it between runs as bytes.
It imports NumPy and pandas and nothing else: no environment, no files, no Mage, no InfluxDB.
"""

__version__ = "0.1.0"
