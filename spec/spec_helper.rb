# frozen_string_literal: true

require 'json'
require 'yaml'
require_relative 'support/bosh_template'
require_relative 'support/http_server'

RELEASE_DIR = File.expand_path('..', __dir__)

module SilkSpecHelpers
  include BoshTemplate
  include HttpServer

  def release
    @release ||= ReleaseDir.new(RELEASE_DIR)
  end

  # Links as the default providers of this release export them (their spec defaults), with
  # overrides for the provider's manifest properties.
  def cf_network_link(manifest = {})
    Link.new(name: 'cf_network', properties: release.job('silk-controller').provided_link_properties('cf_network', manifest))
  end

  def cni_config_link(manifest = {})
    Link.new(name: 'cni_config', properties: release.job('silk-cni').provided_link_properties('cni_config', manifest))
  end

  def vpa_link(manifest = {})
    defaults = { 'ca_cert' => 'vpa-ca', 'client_cert' => 'vpa-cert', 'client_key' => 'vpa-key' }
    Link.new(name: 'vpa', properties: release.job('vxlan-policy-agent').provided_link_properties('vpa', defaults.merge(manifest)))
  end

  def iptables_link(bin_dir = '/sbin')
    Link.new(name: 'iptables', properties: { 'garden' => { 'iptables_bin_dir' => bin_dir } })
  end

  def silk_database_link(manifest = {})
    Link.new(name: 'silk_database', properties: release.job('silk-controller').provided_link_properties('silk_database', manifest))
  end

  def database_link(address = 'db.service.internal')
    Link.new(name: 'database', instances: [LinkInstance.new(address: address)])
  end

  def render_json(job, destination, properties = {}, consumes: [], spec: InstanceSpec.new)
    JSON.parse(release.job(job).template(destination).render(properties, consumes: consumes, spec: spec))
  end
end

RSpec.configure do |config|
  config.include SilkSpecHelpers
  config.disable_monkey_patching!
  config.order = :defined
end
