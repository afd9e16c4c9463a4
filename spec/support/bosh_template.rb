# frozen_string_literal: true

# A renderer for BOSH job templates that behaves like the Director's (bosh-template's
# EvaluationContext): properties are the job spec's declared ones, manifest value else spec
# default; `p`, `if_p`, `link`, `if_link`, `spec` as the Director provides them. The test API
# mirrors bosh-template's Bosh::Template::Test (ReleaseDir, Job, Template, Link, LinkInstance,
# InstanceSpec) so specs read like silk-release's.

require 'erb'
require 'json'
require 'ostruct'
require 'yaml'

module BoshTemplate
  class UnknownProperty < StandardError
    def initialize(names)
      super("Can't find property '#{names.join("', or '")}'")
    end
  end

  class UnknownLink < StandardError
    def initialize(name)
      super("Can't find link '#{name}'")
    end
  end

  # Dotted-name lookup in a nested hash; nil when any segment is missing.
  def self.lookup(hash, dotted)
    dotted.split('.').reduce(hash) do |node, key|
      return nil unless node.is_a?(Hash) && node.key?(key)

      node[key]
    end
  end

  def self.assign(hash, dotted, value)
    *parents, leaf = dotted.split('.')
    node = parents.reduce(hash) { |acc, key| acc[key] ||= {} }
    node[leaf] = value
  end

  # Declared properties only (what the Director binds): manifest value, else the spec default.
  def self.bind_properties(declared, manifest)
    declared.each_with_object({}) do |(name, definition), bound|
      value = lookup(manifest || {}, name)
      value = (definition || {})['default'] if value.nil?
      assign(bound, name, deep_copy(value))
    end
  end

  def self.deep_copy(value)
    Marshal.load(Marshal.dump(value))
  end

  # Recursive OpenStruct, as bosh-template builds `spec` (so `spec.networks.to_h.values` are
  # structs with `.ip`, and keys are symbols).
  def self.openstruct(value)
    case value
    when Hash then OpenStruct.new(value.transform_values { |v| openstruct(v) })
    when Array then value.map { |v| openstruct(v) }
    else value
    end
  end

  # Returned by if_p/if_link when the block did not run: `.else` runs instead.
  class ActiveElseBlock
    def initialize(context)
      @context = context
    end

    def else
      yield
    end

    def else_if_p(*names, &block)
      @context.if_p(*names, &block)
    end
  end

  # Returned when the block ran: `.else` is a no-op.
  class InactiveElseBlock
    def else; end

    def else_if_p(*_names)
      self
    end
  end

  # Property access shared by the template context and links.
  module PropertyAccess
    def p(*args)
      names = Array(args[0])
      names.each do |name|
        value = BoshTemplate.lookup(@raw_properties, name)
        return value unless value.nil?
      end
      return args[1] if args.length == 2

      raise UnknownProperty, names
    end

    def if_p(*names)
      values = names.map { |name| BoshTemplate.lookup(@raw_properties, name) }
      return ActiveElseBlock.new(self) if values.any?(&:nil?)

      yield(*values)
      InactiveElseBlock.new
    end
  end

  class EvaluationLinkInstance
    attr_reader :name, :id, :index, :az, :address, :bootstrap

    def initialize(attrs)
      @name = attrs['name']
      @id = attrs['id']
      @index = attrs['index']
      @az = attrs['az']
      @address = attrs['address']
      @bootstrap = attrs['bootstrap']
    end
  end

  class EvaluationLink
    include PropertyAccess
    attr_reader :instances, :properties, :address

    def initialize(instances, properties, address)
      @instances = instances
      @raw_properties = properties
      @properties = properties
      @address = address
    end
  end

  class EvaluationContext
    include PropertyAccess
    attr_reader :spec, :raw_properties, :name, :index

    def initialize(spec_hash)
      @raw_properties = spec_hash['properties'] || {}
      @links = spec_hash['links'] || {}
      @name = spec_hash['job']&.fetch('name', nil)
      @index = spec_hash['index']
      @spec = BoshTemplate.openstruct(spec_hash)
    end

    def get_binding
      binding
    end

    def link(name)
      data = @links[name]
      raise UnknownLink, name if data.nil?

      instances = (data['instances'] || []).map { |i| EvaluationLinkInstance.new(i) }
      EvaluationLink.new(instances, data['properties'] || {}, data['address'])
    end

    def if_link(name)
      return ActiveElseBlock.new(self) unless @links.key?(name)

      yield link(name)
      InactiveElseBlock.new
    end
  end

  # === Test API (modelled on Bosh::Template::Test) ===

  class LinkInstance
    attr_reader :attrs

    def initialize(name: 'i-name', id: 'i-id', index: 0, az: 'z1', address: '10.0.0.10', bootstrap: true)
      @attrs = { 'name' => name, 'id' => id, 'index' => index, 'az' => az, 'address' => address,
                 'bootstrap' => bootstrap }
    end
  end

  class Link
    attr_reader :name, :instances, :properties, :address

    def initialize(name:, instances: [LinkInstance.new], properties: {}, address: 'link.address.bosh')
      @name = name
      @instances = instances
      @properties = properties
      @address = address
    end

    def to_h
      { 'instances' => instances.map(&:attrs), 'properties' => properties, 'address' => address }
    end
  end

  class InstanceSpec
    attr_reader :attrs

    def initialize(address: '10.0.16.15', az: 'z1', bootstrap: true, deployment: 'cf', id: 'instance-id',
                   index: 0, ip: '10.0.16.15', name: 'diego-cell', networks: nil)
      networks ||= { 'default' => { 'ip' => ip, 'netmask' => '255.255.240.0', 'default' => %w[dns gateway] } }
      @attrs = { 'address' => address, 'az' => az, 'bootstrap' => bootstrap, 'deployment' => deployment,
                 'id' => id, 'index' => index, 'ip' => ip, 'name' => name, 'networks' => networks,
                 'release' => { 'name' => 'silk', 'version' => '0+dev.1' } }
    end
  end

  class ReleaseDir
    attr_reader :path

    def initialize(path)
      @path = File.expand_path(path)
    end

    def job(name)
      Job.new(File.join(path, 'jobs', name))
    end

    def job_names
      Dir.children(File.join(path, 'jobs')).sort
    end
  end

  class Job
    attr_reader :path, :spec

    def initialize(path)
      @path = path
      @spec = YAML.safe_load(File.read(File.join(path, 'spec')), permitted_classes: [], aliases: false)
    end

    def name
      spec['name']
    end

    def declared_properties
      spec['properties'] || {}
    end

    # Properties a provided link exports, bound from this job's manifest properties.
    def provided_link_properties(link_name, manifest = {})
      definition = (spec['provides'] || []).find { |l| l['name'] == link_name }
      raise "job #{name} provides no link #{link_name}" if definition.nil?

      bound = BoshTemplate.bind_properties(declared_properties, manifest)
      (definition['properties'] || []).each_with_object({}) do |prop, out|
        BoshTemplate.assign(out, prop, BoshTemplate.lookup(bound, prop))
      end
    end

    # A template by its rendered destination (`config/x.json`), as bosh-template looks it up;
    # the monit file by 'monit'.
    def template(destination)
      return Template.new(self, File.join(path, 'monit')) if destination == 'monit'

      source, = (spec['templates'] || {}).find { |_src, dst| dst == destination }
      raise "job #{name} renders no #{destination}" if source.nil?

      Template.new(self, File.join(path, 'templates', source))
    end

    def templates
      (spec['templates'] || {}).values
    end
  end

  class Template
    def initialize(job, path)
      @job = job
      @path = path
    end

    def render(manifest_properties = {}, consumes: [], spec: InstanceSpec.new)
      spec_hash = BoshTemplate.deep_copy(spec.attrs)
      spec_hash['job'] = { 'name' => @job.name }
      spec_hash['properties'] = BoshTemplate.bind_properties(@job.declared_properties, manifest_properties || {})
      spec_hash['links'] = consumes.to_h { |l| [l.name, l.to_h] }
      # A fresh subclass per render: methods a template defines with `def` stay in that render.
      context = Class.new(EvaluationContext).new(spec_hash)
      ERB.new(File.read(@path), trim_mode: '-').result(context.get_binding)
    end
  end
end
