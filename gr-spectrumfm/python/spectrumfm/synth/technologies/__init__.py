"""Technology waveforms with their standards' structure, one module each.

Importing this package registers them, in this order (the order of a dataset's classes when
none are named): wifi, lte, nr, ble, zigbee, dvbt, fm, lora, adsb, gsm, noise.
"""

from spectrumfm.synth.technologies import (  # noqa: F401  (registration on import)
    wifi, lte, nr, ble, zigbee, dvbt, fm, lora, adsb, gsm, noise)
