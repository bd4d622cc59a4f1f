"""Every zoo model passes the shared model conformance suite, built narrow to stay fast."""

from __future__ import annotations

from prunetune.components.models import ModelFactory
from prunetune.plugins.models.mobilenet import MobileNetFactory
from prunetune.plugins.models.resnet import ResNetFactory
from prunetune.plugins.models.vgg import VGGFactory
from prunetune.testing.models import ModelConformance


class TestResNet(ModelConformance):
    def make_factory(self) -> ModelFactory:
        return ResNetFactory(ResNetFactory.Config(width=4))


class TestVGG(ModelConformance):
    def make_factory(self) -> ModelFactory:
        return VGGFactory(VGGFactory.Config(width=4, hidden=8))


class TestMobileNet(ModelConformance):
    def make_factory(self) -> ModelFactory:
        return MobileNetFactory(MobileNetFactory.Config(width=4, expansion=2))
