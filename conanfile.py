# Conan 2 recipe for mapdirect (header-only).
#   conan create . -o "mapdirect/*:with_uring=True"
# Consumers: requires = "mapdirect/0.1.0"; CMakeDeps generates
# find_package(mapdirect) with targets mapdirect::mapdirect and, with
# with_uring, mapdirect::uring; PkgConfigDeps generates mapdirect.pc.
import os

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.build import check_min_cppstd
from conan.tools.files import copy

required_conan_version = ">=2.0"


class MapdirectConan(ConanFile):
    name = "mapdirect"
    version = "0.1.0"
    license = "MIT"
    description = ("Durable in-place updates of mapped files on Linux, with the strongest guarantee "
                   "the kernel and file system give and a report of which (header-only C++17)")
    topics = ("mmap", "persistent-memory", "dax", "map-sync", "durability", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"with_uring": [True, False]}
    default_options = {"with_uring": False}
    exports_sources = "include/*", "LICENSE"
    no_copy_source = True

    def requirements(self):
        # Boost.Outcome appears in the public headers, hence transitive_headers.
        self.requires("boost/[>=1.74 <2]", transitive_headers=True)
        if self.options.with_uring:
            self.requires("liburing/[>=2.3 <3]", transitive_headers=True, transitive_libs=True)

    def validate(self):
        if self.settings.os != "Linux":
            raise ConanInvalidConfiguration("mapdirect supports Linux only")
        if self.settings.get_safe("compiler.cppstd"):
            check_min_cppstd(self, 17)

    def package_id(self):
        # The same headers serve every configuration.
        self.info.clear()

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        copy(self, "*.hpp", os.path.join(self.source_folder, "include"),
             os.path.join(self.package_folder, "include"))

    def package_info(self):
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.set_property("cmake_file_name", "mapdirect")
        self.cpp_info.set_property("pkg_config_name", "mapdirect-all")

        core = self.cpp_info.components["core"]
        core.set_property("cmake_target_name", "mapdirect::mapdirect")
        core.set_property("pkg_config_name", "mapdirect")
        core.bindirs = []
        core.libdirs = []
        core.requires = ["boost::headers"]

        if self.options.with_uring:
            uring = self.cpp_info.components["uring"]
            uring.set_property("cmake_target_name", "mapdirect::uring")
            uring.set_property("pkg_config_name", "mapdirect-uring")
            uring.bindirs = []
            uring.libdirs = []
            uring.requires = ["core", "liburing::liburing"]
            uring.system_libs = ["pthread"]
