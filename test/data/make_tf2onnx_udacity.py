"""How test/data/tf2onnx_udacity.onnx was made (not run by the tests; it needs TensorFlow).

A tiny Udacity behavioural-cloning net in Keras 3 (Rescaling, Cropping2D, Conv2D with ELU and
ReLU, Flatten, Dense), saved as .h5 and converted with the command of docs/own-network.md, in a
separate environment with tensorflow-cpu 2.21.0, Keras 3.15.1 and tf2onnx 1.17.0:

    python make_tf2onnx_udacity.py
    python -m tf2onnx.convert --keras tf2onnx_udacity.h5 --opset 13 \\
        --output tf2onnx_udacity.onnx

Keras' own angles for fixed pixels go into tf2onnx_udacity_keras.npz.
"""

import keras
import numpy as np

keras.utils.set_random_seed(7)
inputs = keras.Input((48, 96, 3))
x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
x = keras.layers.Cropping2D(((12, 6), (0, 0)))(x)
x = keras.layers.Conv2D(6, 5, strides=2, activation='elu')(x)
x = keras.layers.Conv2D(8, 3, strides=2, activation='relu')(x)
outputs = keras.layers.Dense(1)(keras.layers.Flatten()(x))
model = keras.Model(inputs, outputs)
model.save('tf2onnx_udacity.h5')
pixels = np.random.default_rng(7).integers(0, 256, (2, 48, 96, 3), dtype=np.uint8)
np.savez('tf2onnx_udacity_keras.npz', pixels=pixels,
         angles=model.predict(pixels.astype(np.float32), verbose=0))
